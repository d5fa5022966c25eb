#include "store/registry.h"

#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "store/manifest.h"
#include "store/reference.h"

namespace perch {
namespace {

constexpr size_t kMaxPage = 1000;

Status CheckRepository(std::string_view repository) {
  if (!IsValidRepositoryName(repository)) {
    return InvalidArgument(fmt::format(
        "invalid repository name '{}': lowercase letters and digits in components joined by "
        "'.', '_', '__' or '-', separated by '/', at most 255 characters",
        repository.substr(0, 255)));
  }
  return Status::Ok();
}

// Upload ids are the BlobStore writer names this registry generates.
bool IsPlausibleUploadId(std::string_view id) {
  return !id.empty() && id.size() <= 100 &&
         id.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") ==
             std::string_view::npos;
}

// A reference is a digest when it has the algorithm separator; tags cannot.
bool IsDigestReference(std::string_view reference) {
  return reference.find(':') != std::string_view::npos;
}

Status CheckTag(std::string_view tag) {
  if (!IsValidTag(tag)) {
    return InvalidArgument(
        fmt::format("invalid tag '{}': [A-Za-z0-9_][A-Za-z0-9._-]{{0,127}}", tag.substr(0, 128)));
  }
  return Status::Ok();
}

ListPage MakePage(std::vector<std::string> names, size_t limit) {
  ListPage page;
  page.more = names.size() > limit;
  if (page.more) {
    names.resize(limit);
  }
  page.names = std::move(names);
  return page;
}

}  // namespace

BlobUpload::BlobUpload(Registry& registry, std::string repository, std::string id,
                       std::unique_ptr<BlobWriter> writer)
    : registry_(registry),
      repository_(std::move(repository)),
      id_(std::move(id)),
      writer_(std::move(writer)) {}

BlobUpload::~BlobUpload() {
  if (writer_) {
    writer_->Keep();
  }
  registry_.Release(id_);
}

uint64_t BlobUpload::size() const { return writer_ ? writer_->size() : 0; }

Status BlobUpload::Append(std::string_view bytes) {
  if (!writer_) {
    return NotFound(fmt::format("upload {} is finished or cancelled", id_));
  }
  const uint64_t limit = registry_.options_.max_blob_bytes;
  if (bytes.size() > limit - writer_->size()) {
    writer_.reset();  // an unkept writer removes its file
    registry_.Forget(id_);
    return ResourceExhausted(fmt::format(
        "the blob is larger than this hub's limit of {} bytes (--max-blob-bytes); the upload was "
        "cancelled",
        limit));
  }
  return writer_->Append(bytes);
}

Result<Digest> BlobUpload::Commit(const Digest& expected) {
  if (!writer_) {
    return NotFound(fmt::format("upload {} is finished or cancelled", id_));
  }
  auto committed = writer_->Commit(expected);
  writer_.reset();
  registry_.Forget(id_);
  if (!committed.ok()) {
    return committed.status();
  }
  PERCH_RETURN_IF_ERROR(registry_.Link(repository_, *committed));
  return committed;
}

Registry::Registry(RegistryOptions options, std::unique_ptr<BlobStore> blobs,
                   std::unique_ptr<RegistryIndex> index)
    : options_(std::move(options)), blobs_(std::move(blobs)), index_(std::move(index)) {}

Registry::~Registry() = default;

Result<std::unique_ptr<Registry>> Registry::Open(const RegistryOptions& options) {
  if (options.max_blob_bytes == 0 || options.max_manifest_bytes == 0) {
    return InvalidArgument("the blob and manifest size limits must be above 0");
  }
  PERCH_ASSIGN_OR_RETURN(auto blobs, BlobStore::Open(options.data / "blobs"));
  PERCH_ASSIGN_OR_RETURN(auto index, RegistryIndex::Open({.file = options.data / "registry.db",
                                                          .clock = options.clock}));
  return std::unique_ptr<Registry>(new Registry(options, std::move(blobs), std::move(index)));
}

void Registry::Release(const std::string& id) {
  std::lock_guard lock(uploads_mutex_);
  held_uploads_.erase(id);
}

void Registry::Forget(const std::string& id) {
  // The row goes after the bytes: a crash between leaves an upload that
  // answers "unknown" on its next use rather than one pointing at nothing.
  (void)blobs_->RemoveWrite(id);
  (void)index_->RemoveUpload(id);
}

Status Registry::Link(std::string_view repository, const Digest& digest) {
  PERCH_ASSIGN_OR_RETURN(const uint64_t size, blobs_->Size(digest));
  // A fresh modification time keeps garbage collection's grace period from
  // collecting an old blob that a push in progress now relies on.
  (void)blobs_->Touch(digest);
  return index_->LinkBlob(repository, digest, size);
}

Result<BlobLocation> Registry::StatBlob(std::string_view repository, const Digest& digest) {
  PERCH_RETURN_IF_ERROR(CheckRepository(repository));
  PERCH_RETURN_IF_ERROR(index_->LinkedBlobSize(repository, digest).status());
  auto size = blobs_->Size(digest);
  if (!size.ok()) {
    return NotFound(fmt::format("blob {} is not in repository {}", digest.str(), repository));
  }
  return BlobLocation{blobs_->PathOf(digest), *size};
}

Status Registry::DeleteBlob(std::string_view repository, const Digest& digest) {
  PERCH_RETURN_IF_ERROR(CheckRepository(repository));
  return index_->UnlinkBlob(repository, digest);
}

Status Registry::MountBlob(std::string_view repository, const Digest& digest,
                           std::string_view from) {
  PERCH_RETURN_IF_ERROR(CheckRepository(repository));
  PERCH_RETURN_IF_ERROR(CheckRepository(from));
  PERCH_RETURN_IF_ERROR(StatBlob(from, digest).status());
  return Link(repository, digest);
}

Result<std::string> Registry::StartUpload(std::string_view repository) {
  PERCH_RETURN_IF_ERROR(CheckRepository(repository));
  PERCH_ASSIGN_OR_RETURN(auto writer, blobs_->OpenWriter("", false));
  writer->Keep();
  std::string id = writer->name();
  if (const Status added = index_->AddUpload(id, repository); !added.ok()) {
    (void)blobs_->RemoveWrite(id);
    return added;
  }
  return id;
}

Result<std::unique_ptr<BlobUpload>> Registry::OpenUpload(std::string_view repository,
                                                         std::string_view id) {
  PERCH_RETURN_IF_ERROR(CheckRepository(repository));
  PERCH_RETURN_IF_ERROR(UploadSize(repository, id).status());
  const std::string name(id);
  {
    std::lock_guard lock(uploads_mutex_);
    if (!held_uploads_.insert(name).second) {
      return Unavailable(fmt::format("upload {} is in use by another request", id));
    }
  }
  auto writer = blobs_->OpenWriter(name, /*resume=*/true);
  if (!writer.ok()) {
    Release(name);
    return writer.status();
  }
  return std::unique_ptr<BlobUpload>(
      new BlobUpload(*this, std::string(repository), name, std::move(writer).value()));
}

Result<uint64_t> Registry::UploadSize(std::string_view repository, std::string_view id) {
  PERCH_RETURN_IF_ERROR(CheckRepository(repository));
  const Status unknown = NotFound(
      fmt::format("upload '{}' is not known in repository {}", id.substr(0, 100), repository));
  if (!IsPlausibleUploadId(id)) {
    return unknown;
  }
  const auto owner = index_->UploadRepository(id);
  if (!owner.ok() || *owner != repository || !blobs_->HasWrite(std::string(id))) {
    return unknown;
  }
  return blobs_->WrittenSize(std::string(id));
}

Status Registry::CancelUpload(std::string_view repository, std::string_view id) {
  PERCH_RETURN_IF_ERROR(UploadSize(repository, id).status());
  const std::string name(id);
  {
    std::lock_guard lock(uploads_mutex_);
    if (held_uploads_.count(name) != 0) {
      return Unavailable(fmt::format("upload {} is in use by another request", id));
    }
  }
  Forget(name);
  return Status::Ok();
}

Result<PushedManifest> Registry::PutManifest(std::string_view repository,
                                             std::string_view reference,
                                             std::string_view content_type,
                                             std::string_view bytes) {
  PERCH_RETURN_IF_ERROR(CheckRepository(repository));
  const bool by_digest = IsDigestReference(reference);
  if (!by_digest) {
    PERCH_RETURN_IF_ERROR(CheckTag(reference));
  }
  if (bytes.size() > options_.max_manifest_bytes) {
    return ResourceExhausted(
        fmt::format("the manifest is {} bytes, more than this hub's limit of {}", bytes.size(),
                    options_.max_manifest_bytes));
  }
  const Digest digest = Sha256Of(bytes);
  if (by_digest) {
    PERCH_ASSIGN_OR_RETURN(const Digest expected, Digest::Parse(reference));
    if (expected != digest) {
      return InvalidArgument(
          fmt::format("digest mismatch: the manifest was pushed as {} but its "
                      "bytes have digest {}",
                      expected.str(), digest.str()));
    }
  }
  PERCH_ASSIGN_OR_RETURN(const Manifest parsed, ParseManifest(content_type, bytes));
  ManifestRecord record{
      .digest = digest,
      .media_type = parsed.media_type,
      .artifact_type = parsed.ReferrerArtifactType(),
      .subject = std::nullopt,
      .size = bytes.size(),
      // Kept as JSON text for the referrers listing; std::map keeps it sorted.
      .annotations = parsed.annotations.empty() ? "" : nlohmann::json(parsed.annotations).dump(),
      .references = {}};
  std::vector<Descriptor> blobs;
  if (!parsed.IsIndex()) {
    blobs.push_back(parsed.config);
    blobs.insert(blobs.end(), parsed.layers.begin(), parsed.layers.end());
  }
  for (const Descriptor& blob : blobs) {
    auto stored = StatBlob(repository, blob.digest);
    if (!stored.ok()) {
      return NotFound(fmt::format("the manifest references blob {} which is not in repository {}",
                                  blob.digest.str(), repository));
    }
    if (stored->size != blob.size) {
      return InvalidArgument(
          fmt::format("the manifest says blob {} is {} bytes but the stored blob is {} bytes",
                      blob.digest.str(), blob.size, stored->size));
    }
    record.references.push_back(blob.digest);
  }
  for (const Descriptor& child : parsed.manifests) {
    auto stored = index_->GetManifest(repository, child.digest);
    if (!stored.ok()) {
      if (stored.status().code() != StatusCode::kNotFound) {
        return stored.status();
      }
      return NotFound(
          fmt::format("the index references manifest {} which is not in "
                      "repository {}",
                      child.digest.str(), repository));
    }
    if (stored->size != child.size) {
      return InvalidArgument(
          fmt::format("the index says manifest {} is {} bytes but the stored manifest is {} bytes",
                      child.digest.str(), child.size, stored->size));
    }
    record.references.push_back(child.digest);
  }
  if (parsed.subject) {
    record.subject = parsed.subject->digest;
  }
  PERCH_RETURN_IF_ERROR(blobs_->Put(bytes).status());
  (void)blobs_->Touch(digest);
  PERCH_RETURN_IF_ERROR(index_->PutManifest(repository, record, by_digest ? "" : reference));
  return PushedManifest{digest, record.subject};
}

Result<StoredManifest> Registry::GetManifest(std::string_view repository,
                                             std::string_view reference) {
  PERCH_RETURN_IF_ERROR(CheckRepository(repository));
  std::optional<Digest> digest;
  if (IsDigestReference(reference)) {
    PERCH_ASSIGN_OR_RETURN(digest, Digest::Parse(reference));
  } else {
    PERCH_RETURN_IF_ERROR(CheckTag(reference));
    PERCH_ASSIGN_OR_RETURN(digest, index_->ResolveTag(repository, reference));
  }
  PERCH_ASSIGN_OR_RETURN(const ManifestRecord record, index_->GetManifest(repository, *digest));
  auto bytes = blobs_->Read(*digest, options_.max_manifest_bytes);
  if (!bytes.ok()) {
    return Internal(fmt::format("manifest {} is indexed but its bytes cannot be read: {}",
                                digest->str(), bytes.status().message()));
  }
  // Cheap next to sending it, and a flipped bit on disk is never served.
  if (Sha256Of(*bytes) != *digest) {
    return Internal(fmt::format("manifest {} is corrupt on disk", digest->str()));
  }
  return StoredManifest{*digest, record.media_type, std::move(bytes).value()};
}

Status Registry::DeleteManifest(std::string_view repository, std::string_view reference) {
  PERCH_RETURN_IF_ERROR(CheckRepository(repository));
  if (!IsDigestReference(reference)) {
    PERCH_RETURN_IF_ERROR(CheckTag(reference));
    return index_->DeleteTag(repository, reference);
  }
  PERCH_ASSIGN_OR_RETURN(const Digest digest, Digest::Parse(reference));
  return index_->DeleteManifest(repository, digest);
}

Result<ListPage> Registry::ListTags(std::string_view repository, std::string_view last,
                                    size_t limit) {
  PERCH_RETURN_IF_ERROR(CheckRepository(repository));
  if (!index_->HasRepository(repository)) {
    return NotFound(fmt::format("repository {} is not known", repository));
  }
  limit = std::min(limit, kMaxPage);
  PERCH_ASSIGN_OR_RETURN(auto names, index_->ListTags(repository, last, limit + 1));
  return MakePage(std::move(names), limit);
}

Result<ListPage> Registry::ListRepositories(std::string_view last, size_t limit) {
  limit = std::min(limit, kMaxPage);
  PERCH_ASSIGN_OR_RETURN(auto names, index_->ListRepositories(last, limit + 1));
  return MakePage(std::move(names), limit);
}

Result<std::vector<ManifestRecord>> Registry::Referrers(std::string_view repository,
                                                        const Digest& digest,
                                                        std::string_view artifact_type) {
  PERCH_RETURN_IF_ERROR(CheckRepository(repository));
  PERCH_ASSIGN_OR_RETURN(auto referrers, index_->Referrers(repository, digest));
  if (!artifact_type.empty()) {
    std::erase_if(referrers, [&](const ManifestRecord& record) {
      return record.artifact_type != artifact_type;
    });
  }
  return referrers;
}

Result<GcReport> Registry::CollectGarbage(const GcOptions& options) {
  GcReport report;
  // Uploads first: a stale upload's bytes are never a committed blob.
  for (const std::string& id : blobs_->StaleWrites(options.grace)) {
    {
      std::lock_guard lock(uploads_mutex_);
      if (held_uploads_.count(id) != 0) {
        continue;
      }
    }
    ++report.removed_uploads;
    if (!options.dry_run) {
      Forget(id);
    }
  }
  PERCH_ASSIGN_OR_RETURN(const std::vector<std::string> uploads, index_->ListUploads());
  for (const std::string& id : uploads) {
    if (!blobs_->HasWrite(id) && !options.dry_run) {
      (void)index_->RemoveUpload(id);
    }
  }
  PERCH_ASSIGN_OR_RETURN(const std::vector<Digest> live, index_->LiveDigests());
  const std::set<Digest> marked(live.begin(), live.end());
  PERCH_ASSIGN_OR_RETURN(const std::vector<BlobInfo> blobs, blobs_->List());
  const auto cutoff = std::filesystem::file_time_type::clock::now() - options.grace;
  for (const BlobInfo& blob : blobs) {
    if (marked.count(blob.digest) != 0 || blob.modified >= cutoff) {
      ++report.kept_blobs;
      continue;
    }
    if (!options.dry_run) {
      // Unlinked before removed: a reader then sees "unknown", never a link
      // to a file that is gone.
      PERCH_RETURN_IF_ERROR(index_->UnlinkBlobEverywhere(blob.digest));
      PERCH_RETURN_IF_ERROR(blobs_->Remove(blob.digest));
    }
    report.removed_bytes += blob.size;
    report.removed.push_back(blob);
  }
  return report;
}

}  // namespace perch
