// A client for one OCI Distribution registry (the hub's own, Distribution,
// Harbor, Zot, cloud registries): manifests, blobs, tags, catalog.
//
// Everything that arrives is verified: manifests against their digest, blobs
// against descriptor size and digest as they stream into a BlobStore. A blob
// download that breaks keeps its bytes under a name derived from the digest,
// so the next fetch (in this process or after a restart) asks for the rest
// with an HTTP Range request.
//
// Transport: https (verified against the system's CAs, or `ca_file`),
// except for loopback hosts (127.0.0.1, localhost, [::1]) and with
// `insecure`, which use plain http, as Docker does. One kept-alive
// http::Client carries every call. Auth: a static
// bearer token, and the registry token flow (a 401 with
// `WWW-Authenticate: Bearer realm=...` answered by an anonymous token from
// the realm) that Docker Hub, GHCR and Harbor use.
//
// Errors are Status values that say what to fix: Unavailable for transport
// trouble ("registry 127.0.0.1:5000 is unreachable: connection refused"),
// NotFound, Unauthenticated, PermissionDenied, InvalidArgument for content
// that fails verification. No exception leaves this class.
//
// Threading: one RegistryClient is used by one thread at a time.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <vector>

#include "core/status.h"
#include "store/blob_sources.h"
#include "store/blob_store.h"
#include "store/digest.h"
#include "store/model_artifact.h"

namespace perch {

struct RegistryClientOptions {
  std::string registry;   // "host[:port]", as in a Reference
  bool insecure = false;  // plain http for a non-loopback registry
  std::string token;      // sent as "Authorization: Bearer <token>" when set
  std::string ca_file;    // https: PEM CAs to trust instead of the system's
  std::chrono::seconds connect_timeout{10};
  std::chrono::seconds read_timeout{60};  // per read, not per transfer
  // Blobs up to this size are uploaded in one PUT, larger ones in PATCH
  // chunks of this size.
  uint64_t chunk_size = uint64_t{16} << 20;
  // Other agents of the location to ask for a blob before the registry
  // (FetchBlob): each is verified like the registry, and any failure falls
  // back to the next source, resuming what was received.
  BlobSources blob_sources{};
  // Once requested, a call in progress ends with Cancelled within about a
  // second, and later calls fail at once (http::ClientOptions::stop).
  std::stop_token stop{};
};

struct FetchedManifest {
  std::string bytes;
  std::string media_type;
  Digest digest = Sha256Of("");  // of `bytes`, checked against what was asked for
};

enum class BlobPush { kPresent, kMounted, kUploaded };

class RegistryClient {
 public:
  // InvalidArgument for a malformed registry host or an unreadable ca_file.
  static Result<std::unique_ptr<RegistryClient>> Create(RegistryClientOptions options);
  ~RegistryClient();
  RegistryClient(const RegistryClient&) = delete;
  RegistryClient& operator=(const RegistryClient&) = delete;

  const std::string& registry() const;

  // GET /v2/: is the registry there and does it speak the Distribution API?
  Status Ping();

  // Fetches a manifest by tag or digest. When asked by digest, the bytes
  // must hash to it; by tag, they must match the Docker-Content-Digest the
  // registry names, if any. NotFound for an unknown repository or reference.
  Result<FetchedManifest> GetManifest(const std::string& repository, const std::string& reference);
  // HEAD: the digest, media type and size of a manifest without its body.
  Result<Descriptor> HeadManifest(const std::string& repository, const std::string& reference);
  // Stores a manifest under `reference` (a tag or its digest). Returns its digest.
  Result<Digest> PutManifest(const std::string& repository, const std::string& reference,
                             const std::string& bytes, const std::string& media_type);
  // Deletes a manifest (and so every tag that points to it).
  Status DeleteManifest(const std::string& repository, const Digest& digest);

  // The size of a blob the repository holds, nullopt when it holds none.
  Result<std::optional<uint64_t>> BlobSize(const std::string& repository, const Digest& digest);

  // Streams a blob into `store`, verifying size and digest. A download that
  // breaks keeps what it got under BlobWriterName(digest) (Unavailable);
  // the next call resumes from there. With `blob_sources`, the location's
  // peers are asked first (FetchBlobFromPeers) and the registry resumes
  // after what they sent. More bytes than the descriptor says
  // aborts the transfer at size + 1 and a wrong digest discards the bytes
  // (both InvalidArgument). A blob already in the store is not fetched.
  Status FetchBlob(const std::string& repository, const Descriptor& blob, BlobStore& store,
                   const TransferProgress& progress = nullptr);
  // A small blob (a config) into memory, verified. At most kMaxManifestBytes.
  Result<std::string> FetchSmallBlob(const std::string& repository, const Descriptor& blob);

  // Uploads the file at `path` as blob `digest` of `size` bytes, unless the
  // repository has it. With `mount_from` (another repository of the same
  // registry that holds it), asks for a cross-repository mount first.
  Result<BlobPush> PushBlob(const std::string& repository, const Digest& digest, uint64_t size,
                            const std::filesystem::path& path, const std::string& mount_from = "",
                            const TransferProgress& progress = nullptr);
  // Makes `repository` hold blob `digest` by mounting it from `from`
  // (another repository of this registry). False when the registry would
  // not mount it (the upload it started instead is cancelled).
  Result<bool> MountBlob(const std::string& repository, const Digest& digest,
                         const std::string& from);
  // Uploads small content (a config) held in memory.
  Result<BlobPush> PushSmallBlob(const std::string& repository, const std::string& bytes);

  // The referrers index of manifest `subject` (GET /v2/<repo>/referrers/<digest>,
  // filtered by `artifact_type` when the registry can), at most
  // kMaxManifestBytes. nullopt when the registry has no referrers API (it
  // answers 404): the caller then reads the tag-schema index
  // (ReferrersTagOf) instead.
  Result<std::optional<std::string>> GetReferrers(const std::string& repository,
                                                  const Digest& subject,
                                                  const std::string& artifact_type);

  // Every tag of `repository`, following the Link header page by page.
  Result<std::vector<std::string>> ListTags(const std::string& repository);
  // Every repository of the registry (GET /v2/_catalog), page by page.
  Result<std::vector<std::string>> Catalog();

 private:
  class Impl;
  explicit RegistryClient(std::unique_ptr<Impl> impl);
  // FetchBlob from the registry alone, resuming a partial download.
  Status FetchBlobFromRegistry(const std::string& repository, const Descriptor& blob,
                               BlobStore& store, const TransferProgress& progress);
  std::unique_ptr<Impl> impl_;
};

// The BlobStore writer name a download of `digest` keeps its partial bytes
// under: stable across restarts, so a later pull resumes it.
std::string BlobWriterName(const Digest& digest);

// The tag the OCI referrers tag schema keeps `subject`'s referrers index
// under, for registries without the referrers API: "sha256-<hex>".
std::string ReferrersTagOf(const Digest& subject);

// True for 127.0.0.1 (any 127.x), localhost and [::1], with or without a port.
bool IsLoopbackRegistry(const std::string& registry);

}  // namespace perch
