// The OCI Distribution registry behind `perch hub`, independent of HTTP:
// repositories, blobs (uploaded in one piece or in chunks, mounted from
// another repository), manifests by tag or digest, tags, referrers, and
// garbage collection. Bytes live in a BlobStore under DATA/blobs (verified
// before they become visible); who sees what lives in a RegistryIndex
// (DATA/registry.db).
//
// Errors: every function returns InvalidArgument for a repository name or
// tag outside the OCI grammar, before anything touches the disk. The
// per-function comments say what the other codes mean, so that a transport
// can map them to its own error codes.
//
// Threading: Registry is safe to use from any thread. A BlobUpload belongs to
// one thread; an upload is held by at most one BlobUpload at a time.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.h"
#include "core/status.h"
#include "store/blob_store.h"
#include "store/digest.h"
#include "store/registry_index.h"

namespace perch {

struct RegistryOptions {
  std::filesystem::path data;                    // DATA: blobs/ and registry.db
  uint64_t max_blob_bytes = uint64_t{16} << 30;  // largest blob an upload may grow to
  uint64_t max_manifest_bytes = 4 << 20;         // largest manifest accepted
  WallClock clock{};                             // stamps manifests and uploads
};

struct BlobLocation {
  std::filesystem::path path;  // the committed, immutable file
  uint64_t size = 0;
};

struct StoredManifest {
  Digest digest;
  std::string media_type;
  std::string bytes;
};

struct PushedManifest {
  Digest digest;
  std::optional<Digest> subject;  // for the OCI-Subject answer header
};

// One page of a listing: `names` in byte order; `more` when a next page exists.
struct ListPage {
  std::vector<std::string> names;
  bool more = false;
};

struct GcOptions {
  bool dry_run = false;
  // Unreferenced blobs and partial uploads younger than this are kept: a push
  // in progress has uploaded its blobs but not yet its manifest.
  std::chrono::seconds grace{3600};
};

struct GcReport {
  std::vector<BlobInfo> removed;  // (or, in a dry run, that would be removed)
  uint64_t removed_bytes = 0;
  size_t kept_blobs = 0;
  size_t removed_uploads = 0;
};

class Registry;

// One request's hold on an upload in progress.
class BlobUpload {
 public:
  // Releases the upload; bytes appended so far stay for the next request.
  ~BlobUpload();
  BlobUpload(const BlobUpload&) = delete;
  BlobUpload& operator=(const BlobUpload&) = delete;

  const std::string& id() const { return id_; }
  uint64_t size() const;

  // ResourceExhausted when the blob would grow past max_blob_bytes: the
  // upload is then cancelled and its bytes removed. Internal on a write error.
  Status Append(std::string_view bytes);
  // Verifies the bytes against `expected`, moves them into the store and
  // makes the blob visible in the upload's repository; the upload is then
  // gone. InvalidArgument on a digest mismatch (the bytes are removed, the
  // upload is gone too: nothing unverified stays).
  Result<Digest> Commit(const Digest& expected);

 private:
  friend class Registry;
  BlobUpload(Registry& registry, std::string repository, std::string id,
             std::unique_ptr<BlobWriter> writer);

  Registry& registry_;
  std::string repository_;
  std::string id_;
  std::unique_ptr<BlobWriter> writer_;  // null once committed or cancelled
};

class Registry {
 public:
  // Creates DATA and what it holds if missing. Internal / Unavailable when
  // the folder or the index cannot be opened.
  static Result<std::unique_ptr<Registry>> Open(const RegistryOptions& options);
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  const RegistryOptions& options() const { return options_; }

  // NotFound when the blob is not visible in `repository`.
  Result<BlobLocation> StatBlob(std::string_view repository, const Digest& digest);
  // Hides the blob from `repository` (garbage collection frees the bytes).
  // NotFound when it was not visible there.
  Status DeleteBlob(std::string_view repository, const Digest& digest);
  // Makes a blob of `from` visible in `repository` without copying it.
  // NotFound when `from` does not have it.
  Status MountBlob(std::string_view repository, const Digest& digest, std::string_view from);

  // A new upload's id.
  Result<std::string> StartUpload(std::string_view repository);
  // NotFound for an unknown id (or one of another repository); Unavailable
  // while another request holds the upload.
  Result<std::unique_ptr<BlobUpload>> OpenUpload(std::string_view repository, std::string_view id);
  // Bytes received so far. NotFound for an unknown id.
  Result<uint64_t> UploadSize(std::string_view repository, std::string_view id);
  // NotFound for an unknown id; Unavailable while a request holds it.
  Status CancelUpload(std::string_view repository, std::string_view id);

  // Validates and stores a manifest under `reference` (a tag, or the digest
  // the bytes must have). InvalidArgument when the manifest is invalid (not
  // JSON, unknown media type, Content-Type disagreeing with mediaType, a
  // descriptor size differing from the stored blob, a digest reference that
  // is not the bytes' digest); NotFound when a blob or child manifest it
  // references is not in the repository; ResourceExhausted when larger than
  // max_manifest_bytes.
  Result<PushedManifest> PutManifest(std::string_view repository, std::string_view reference,
                                     std::string_view content_type, std::string_view bytes);
  // NotFound when there is no such tag or manifest.
  Result<StoredManifest> GetManifest(std::string_view repository, std::string_view reference);
  // By digest: the manifest and its tags. By tag: only the tag. NotFound if absent.
  Status DeleteManifest(std::string_view repository, std::string_view reference);

  // NotFound for an unknown repository. `limit` is capped at 1000.
  Result<ListPage> ListTags(std::string_view repository, std::string_view last, size_t limit);
  Result<ListPage> ListRepositories(std::string_view last, size_t limit);
  // Manifests whose subject is `digest`, optionally only those of
  // `artifact_type`. An unknown subject has no referrers (not an error).
  Result<std::vector<ManifestRecord>> Referrers(std::string_view repository, const Digest& digest,
                                                std::string_view artifact_type);

  // Removes blobs no manifest needs and stale partial uploads.
  Result<GcReport> CollectGarbage(const GcOptions& options);

 private:
  friend class BlobUpload;
  Registry(RegistryOptions options, std::unique_ptr<BlobStore> blobs,
           std::unique_ptr<RegistryIndex> index);
  void Release(const std::string& id);
  void Forget(const std::string& id);
  Status Link(std::string_view repository, const Digest& digest);

  const RegistryOptions options_;
  const std::unique_ptr<BlobStore> blobs_;
  const std::unique_ptr<RegistryIndex> index_;

  std::mutex uploads_mutex_;
  std::set<std::string> held_uploads_;  // guarded by uploads_mutex_
};

}  // namespace perch
