// The registry's metadata in one SQLite database (WAL): repositories, which
// blobs each repository may serve, manifests (media type, artifact type,
// subject, what they reference), tags and uploads in progress. The bytes
// themselves live in the BlobStore; this index only says who sees what.
//
// Names, tags and digests are validated by the caller (Registry); the index
// stores them as given.
//
// Threading: safe from any thread; one connection serialised by a mutex.
// Several processes may open the same file (the hub and `perch hub gc`):
// SQLite's locking keeps them consistent.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.h"
#include "core/status.h"
#include "store/digest.h"

namespace perch {

struct ManifestRecord {
  Digest digest;
  std::string media_type;
  std::string artifact_type;  // empty when the manifest names none
  std::optional<Digest> subject;
  uint64_t size = 0;
  std::string annotations;  // a JSON object's text, empty when none
  // Config, layers, or child manifests: what garbage collection keeps.
  // Written by PutManifest; GetManifest and Referrers leave it empty.
  std::vector<Digest> references;
};

struct RegistryIndexOptions {
  std::filesystem::path file{};  // e.g. DATA/registry.db
  // Stamps manifests (referrers are listed oldest first) and uploads.
  WallClock clock{};
};

class RegistryIndex {
 public:
  // Creates the file and its tables if missing. Unavailable when the file
  // cannot be opened or is not a registry index; Unavailable from any call
  // when another process holds the file locked for over 10 s.
  static Result<std::unique_ptr<RegistryIndex>> Open(const RegistryIndexOptions& options);
  ~RegistryIndex();
  RegistryIndex(const RegistryIndex&) = delete;
  RegistryIndex& operator=(const RegistryIndex&) = delete;

  // Makes a blob visible in `repository` (creating the repository).
  Status LinkBlob(std::string_view repository, const Digest& digest, uint64_t size);
  // The size recorded for a linked blob; NotFound when not linked there.
  Result<uint64_t> LinkedBlobSize(std::string_view repository, const Digest& digest);
  // NotFound when the blob was not linked in `repository`.
  Status UnlinkBlob(std::string_view repository, const Digest& digest);
  // Drops the blob from every repository (its bytes were collected).
  Status UnlinkBlobEverywhere(const Digest& digest);

  // Adds or replaces a manifest and, when `tag` is not empty, points the tag
  // at it, in one transaction.
  Status PutManifest(std::string_view repository, const ManifestRecord& manifest,
                     std::string_view tag);
  // NotFound when the repository holds no such manifest.
  Result<ManifestRecord> GetManifest(std::string_view repository, const Digest& digest);
  // NotFound when the tag does not exist.
  Result<Digest> ResolveTag(std::string_view repository, std::string_view tag);
  // Removes a manifest and the tags pointing at it. NotFound if absent.
  Status DeleteManifest(std::string_view repository, const Digest& digest);
  // NotFound if absent.
  Status DeleteTag(std::string_view repository, std::string_view tag);

  bool HasRepository(std::string_view repository);
  // At most `limit` names after `last` (exclusive; empty: from the start), in
  // byte order.
  Result<std::vector<std::string>> ListTags(std::string_view repository, std::string_view last,
                                            size_t limit);
  Result<std::vector<std::string>> ListRepositories(std::string_view last, size_t limit);
  // Manifests of `repository` whose subject is `subject`, oldest first.
  Result<std::vector<ManifestRecord>> Referrers(std::string_view repository, const Digest& subject);

  Status AddUpload(std::string_view id, std::string_view repository);
  // The repository an upload belongs to; NotFound for an unknown id.
  Result<std::string> UploadRepository(std::string_view id);
  Status RemoveUpload(std::string_view id);
  Result<std::vector<std::string>> ListUploads();

  // Every digest some manifest needs: the manifests themselves, what they
  // reference, and their subjects. The mark phase of garbage collection.
  Result<std::vector<Digest>> LiveDigests();

 private:
  class Impl;
  explicit RegistryIndex(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace perch
