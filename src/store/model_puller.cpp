#include "store/model_puller.h"

#include <fcntl.h>
#include <fmt/chrono.h>
#include <fmt/format.h>
#include <stdio.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <random>

#include "core/files.h"
#include "store/pipeline_artifact.h"
#include "store/signature_referrers.h"

namespace perch {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr std::string_view kRecordsFile = "pulled.json";

std::string RandomSuffix() {
  std::random_device device;
  return fmt::format("{:08x}{:08x}", device(), device());
}

Status WriteAll(int fd, std::string_view bytes, const fs::path& path) {
  while (!bytes.empty()) {
    const ssize_t written = ::write(fd, bytes.data(), bytes.size());
    if (written < 0) {
      if (errno == EINTR) {
        continue;
      }
      return Internal(fmt::format("cannot write {}: {}", path.string(), std::strerror(errno)));
    }
    bytes.remove_prefix(static_cast<size_t>(written));
  }
  return Status::Ok();
}

// Creates `path` (which must not exist) with the bytes of `source`, a
// verified blob: as a hard link when both are on one filesystem (a model
// costs its size once, and installing takes no time), else as a synced
// copy. Blobs are read-only, so a linked model file is too.
Status InstallFile(const fs::path& source, const fs::path& path) {
  if (::link(source.c_str(), path.c_str()) == 0) {
    return Status::Ok();
  }
  if (errno != EXDEV && errno != EPERM && errno != EMLINK) {
    return Internal(fmt::format("cannot link {} to {}: {}", path.string(), source.string(),
                                std::strerror(errno)));
  }
  std::ifstream in(source, std::ios::binary);
  if (!in) {
    return NotFound(fmt::format("cannot open {}", source.string()));
  }
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0) {
    return Internal(fmt::format("cannot create {}: {}", path.string(), std::strerror(errno)));
  }
  std::string buffer(1 << 20, '\0');
  Status status;
  while (status.ok() && in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    status = WriteAll(fd, std::string_view(buffer.data(), static_cast<size_t>(in.gcount())), path);
  }
  if (status.ok() && ::fsync(fd) != 0) {
    status = Internal(fmt::format("cannot sync {}: {}", path.string(), std::strerror(errno)));
  }
  ::close(fd);
  return status;
}

Result<std::string> ReadSmallFile(const fs::path& path, uint64_t max_bytes) {
  std::error_code error;
  const auto size = fs::file_size(path, error);
  if (error) {
    return NotFound(fmt::format("cannot read {}: {}", path.string(), error.message()));
  }
  if (size > max_bytes) {
    return InvalidArgument(fmt::format("{} is larger than {} bytes", path.string(), max_bytes));
  }
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::string NowRfc3339() {
  return fmt::format(
      "{:%Y-%m-%dT%H:%M:%SZ}",
      fmt::gmtime(std::chrono::system_clock::to_time_t(std::chrono::system_clock::now())));
}

std::vector<Digest> DigestsOf(const json& list) {
  std::vector<Digest> digests;
  if (!list.is_array()) {
    return digests;
  }
  for (const json& entry : list) {
    if (auto digest = Digest::Parse(entry.is_string() ? entry.get<std::string>() : "");
        digest.ok()) {
      digests.push_back(*digest);
    }
  }
  return digests;
}

// The signature digests a version folder's record names.
std::vector<Digest> InstalledSignatures(const fs::path& version_folder) {
  auto text = ReadSmallFile(version_folder / kArtifactRecordFile, 64 << 10);
  if (!text.ok()) {
    return {};
  }
  const json record = json::parse(*text, nullptr, false);
  return record.is_object() ? DigestsOf(record.value("signatures", json())) : std::vector<Digest>{};
}

json DigestList(const std::vector<Digest>& digests) {
  json list = json::array();
  for (const Digest& digest : digests) {
    list.push_back(digest.str());
  }
  return list;
}

}  // namespace

std::string SignatureFileName(size_t i) {
  return i == 0 ? std::string(kSignatureFile) : fmt::format("{}.{}", kSignatureFile, i + 1);
}

bool IsSignatureFileName(std::string_view name) {
  if (name == kSignatureFile) {
    return true;
  }
  if (!name.starts_with(kSignatureFile) || name.size() < kSignatureFile.size() + 2 ||
      name[kSignatureFile.size()] != '.') {
    return false;
  }
  const std::string_view number = name.substr(kSignatureFile.size() + 1);
  return number[0] != '0' && number.find_first_not_of("0123456789") == std::string_view::npos;
}

Result<FetchedModel> FetchModel(RegistryClient& client, const Reference& reference,
                                BlobStore& blobs, const TransferProgress& progress) {
  PERCH_ASSIGN_OR_RETURN(const FetchedManifest fetched,
                         client.GetManifest(reference.repository, reference.Identifier()));
  const auto in_context = [&](const Status& status) {
    return Status(status.code(), fmt::format("{}: {}", reference.ToString(), status.message()));
  };
  auto manifest = ParseManifest(fetched.media_type, fetched.bytes);
  if (!manifest.ok()) {
    return in_context(manifest.status());
  }
  auto artifact = ModelArtifactOf(*manifest);
  if (!artifact.ok()) {
    return in_context(artifact.status());
  }
  PERCH_ASSIGN_OR_RETURN(const std::string config,
                         client.FetchSmallBlob(reference.repository, manifest->config));
  auto metadata = DecodeModelConfig(config);
  if (!metadata.ok()) {
    return in_context(metadata.status());
  }
  uint64_t total = 0;
  for (const auto& file : artifact->files) {
    total += file.layer.size;
  }
  uint64_t done = 0;
  for (const auto& file : artifact->files) {
    const uint64_t before = done;
    const Status fetched_blob =
        client.FetchBlob(reference.repository, file.layer, blobs, [&](uint64_t got, uint64_t) {
          if (progress) {
            progress(before + got, total);
          }
        });
    if (!fetched_blob.ok()) {
      return Status(fetched_blob.code(), fmt::format("{} (file {}): {}", reference.ToString(),
                                                     file.path, fetched_blob.message()));
    }
    done += file.layer.size;
  }
  FetchedModel model{
      fetched.digest, std::move(artifact).value(), std::move(metadata).value(), {}, {}};
  auto signatures =
      FetchSignatures(client, reference.repository, fetched.digest, &model.signature_notes);
  if (!signatures.ok()) {
    return in_context(signatures.status());
  }
  for (const FetchedSignature& signature : *signatures) {
    PERCH_ASSIGN_OR_RETURN(const Digest stored, blobs.Put(signature.bundle));
    model.signatures.push_back(stored);
  }
  // Config and manifest last: a manifest in the store means a complete model.
  PERCH_RETURN_IF_ERROR(blobs.Put(config).status());
  PERCH_RETURN_IF_ERROR(blobs.Put(fetched.bytes).status());
  return model;
}

Result<std::vector<FetchedModel>> FetchPipelineSteps(RegistryClient& client,
                                                     const Reference& reference,
                                                     const FetchedModel& pipeline, BlobStore& blobs,
                                                     const TransferProgress& progress) {
  std::vector<FetchedModel> steps;
  if (pipeline.metadata.platform != kPipelinePlatform) {
    return steps;
  }
  PERCH_ASSIGN_OR_RETURN(const auto pinned, PinnedStepsOf(reference, pipeline.metadata));
  for (const PinnedStep& step : pinned) {
    auto fetched = FetchModel(client, step.reference, blobs, progress);
    const Status status =
        fetched.ok() ? CheckPinnedStep(step, fetched->metadata.name, fetched->metadata.version)
                     : fetched.status();
    if (!status.ok()) {
      return Status(status.code(),
                    fmt::format("pipeline '{}': step {} (model '{}' pinned to {}): {}",
                                pipeline.metadata.name, step.steps, step.model,
                                step.reference.ToString(), status.message()));
    }
    steps.push_back(std::move(fetched).value());
  }
  return steps;
}

Result<FetchedModel> LoadCachedModel(const BlobStore& blobs, const Digest& digest,
                                     const std::vector<Digest>& signatures) {
  PERCH_ASSIGN_OR_RETURN(const std::string bytes, blobs.Read(digest, kMaxManifestBytes));
  // Cached only once read with the registry's Content-Type, so it says
  // its own media type or has the shape of one.
  PERCH_ASSIGN_OR_RETURN(const Manifest manifest, ParseManifest("", bytes));
  PERCH_ASSIGN_OR_RETURN(ModelArtifact artifact, ModelArtifactOf(manifest));
  PERCH_ASSIGN_OR_RETURN(const std::string config,
                         blobs.Read(manifest.config.digest, kMaxManifestBytes));
  PERCH_ASSIGN_OR_RETURN(ModelMetadata metadata, DecodeModelConfig(config));
  for (const auto& file : artifact.files) {
    if (!blobs.Has(file.layer.digest)) {
      return NotFound(fmt::format("the cache lacks blob {} ({}) of manifest {}",
                                  file.layer.digest.str(), file.path, digest.str()));
    }
  }
  for (const Digest& signature : signatures) {
    if (!blobs.Has(signature)) {
      return NotFound(fmt::format("the cache lacks signature {} of manifest {}", signature.str(),
                                  digest.str()));
    }
  }
  return FetchedModel{digest, std::move(artifact), std::move(metadata), signatures, {}};
}

std::optional<Digest> InstalledDigest(const fs::path& version_folder) {
  auto text = ReadSmallFile(version_folder / kArtifactRecordFile, 64 << 10);
  if (!text.ok()) {
    return std::nullopt;
  }
  const json record = json::parse(*text, nullptr, false);
  if (!record.is_object() || !record.contains("digest") || !record["digest"].is_string()) {
    return std::nullopt;
  }
  auto digest = Digest::Parse(record["digest"].get<std::string>());
  return digest.ok() ? std::optional<Digest>(*digest) : std::nullopt;
}

Result<bool> InstallModel(const BlobStore& blobs, const FetchedModel& model, const fs::path& root,
                          const std::string& reference) {
  const fs::path model_folder = root / model.metadata.name;
  const fs::path target = model_folder / std::to_string(model.metadata.version);
  if (InstalledDigest(target) == model.digest && InstalledSignatures(target) == model.signatures) {
    return false;
  }
  std::error_code error;
  fs::create_directories(model_folder, error);
  if (error) {
    return Internal(fmt::format("cannot create {}: {}", model_folder.string(), error.message()));
  }
  // Staged inside the model folder (a name no version folder can have), so
  // the final rename stays on one filesystem.
  const fs::path staging = model_folder / (".staging-" + RandomSuffix());
  const auto fail = [&](Status status) {
    std::error_code ignored;
    fs::remove_all(staging, ignored);
    return status;
  };
  fs::create_directory(staging, error);
  if (error) {
    return Internal(fmt::format("cannot create {}: {}", staging.string(), error.message()));
  }
  for (const auto& file : model.artifact.files) {
    // Paths were validated when the manifest was decoded; checked again
    // here because this is where a bad one would do harm.
    if (Status valid = ValidateModelFilePath(file.path); !valid.ok()) {
      return fail(valid);
    }
    const fs::path destination = staging / file.path;
    fs::create_directories(destination.parent_path(), error);
    if (error) {
      return fail(Internal(fmt::format("cannot create {}: {}", destination.parent_path().string(),
                                       error.message())));
    }
    if (Status copied = InstallFile(blobs.PathOf(file.layer.digest), destination); !copied.ok()) {
      return fail(copied);
    }
  }
  for (size_t i = 0; i < model.signatures.size(); ++i) {
    if (Status copied =
            InstallFile(blobs.PathOf(model.signatures[i]), staging / SignatureFileName(i));
        !copied.ok()) {
      return fail(copied);
    }
  }
  json record = {{"reference", reference}, {"digest", model.digest.str()}};
  if (!model.signatures.empty()) {
    record["signatures"] = DigestList(model.signatures);
  }
  if (Status written = WriteFileAtomically(staging / kArtifactRecordFile, record.dump(2) + "\n");
      !written.ok()) {
    return fail(written);
  }
  const fs::path model_json = model_folder / "model.json";
  if (!model.metadata.model_config_json.empty()) {
    const json config = json::parse(model.metadata.model_config_json, nullptr, false);
    if (Status written = WriteFileAtomically(model_json, config.dump(2) + "\n"); !written.ok()) {
      return fail(written);
    }
  } else {
    fs::remove(model_json, error);
  }
  // The version's folders are durable before they are swapped in (its files
  // are synced blobs or synced copies).
  if (Status synced = SyncTree(staging); !synced.ok()) {
    return fail(synced);
  }
  if (fs::exists(target, error)) {
    // One atomic swap: readers see the old folder or the new one.
    if (::renameat2(AT_FDCWD, staging.c_str(), AT_FDCWD, target.c_str(), RENAME_EXCHANGE) != 0) {
      return fail(Internal(
          fmt::format("cannot swap {} into place: {}", target.string(), std::strerror(errno))));
    }
    fs::remove_all(staging, error);  // now the old version folder
  } else {
    fs::rename(staging, target, error);
    if (error) {
      return fail(
          Internal(fmt::format("cannot move {} into place: {}", target.string(), error.message())));
    }
  }
  if (Status synced = SyncDirectory(target.parent_path()); !synced.ok()) {
    return fail(synced);
  }
  return true;
}

ModelPuller::ModelPuller(fs::path state, std::unique_ptr<BlobStore> blobs,
                         std::map<std::string, PulledRecord> records)
    : state_(std::move(state)),
      models_(state_ / "models"),
      blobs_(std::move(blobs)),
      records_(std::move(records)) {}

Result<std::unique_ptr<ModelPuller>> ModelPuller::Open(const fs::path& state) {
  std::error_code error;
  fs::create_directories(state / "models", error);
  if (error) {
    return Internal(
        fmt::format("cannot create {}: {}", (state / "models").string(), error.message()));
  }
  PERCH_ASSIGN_OR_RETURN(auto blobs, BlobStore::Open(state / "blobs"));
  std::map<std::string, PulledRecord> records;
  const fs::path file = state / kRecordsFile;
  if (fs::exists(file, error)) {
    PERCH_ASSIGN_OR_RETURN(const std::string text, ReadSmallFile(file, 16 << 20));
    const json value = json::parse(text, nullptr, false);
    if (!value.is_object() || !value.contains("references") || !value["references"].is_object()) {
      return InvalidArgument(
          fmt::format("{} is not perch's record of pulled models; move it away", file.string()));
    }
    for (const auto& [reference, entry] : value["references"].items()) {
      if (!entry.is_object()) {
        continue;
      }
      auto digest = Digest::Parse(entry.value("digest", std::string()));
      if (!digest.ok()) {
        continue;
      }
      records.emplace(reference,
                      PulledRecord{reference, *digest, entry.value("model", ""),
                                   entry.value("version", int64_t{0}), entry.value("pulled_at", ""),
                                   DigestsOf(entry.value("signatures", json()))});
    }
  }
  return std::unique_ptr<ModelPuller>(new ModelPuller(state, std::move(blobs), std::move(records)));
}

Status ModelPuller::SaveRecords() const {
  json references = json::object();
  for (const auto& [reference, record] : records_) {
    references[reference] = {{"digest", record.digest.str()},
                             {"model", record.model},
                             {"version", record.version},
                             {"pulled_at", record.pulled_at}};
    if (!record.signatures.empty()) {
      references[reference]["signatures"] = DigestList(record.signatures);
    }
  }
  const json value = {{"references", references}};
  return WriteFileAtomically(state_ / kRecordsFile, value.dump(2) + "\n");
}

Result<std::vector<SyncOutcome>> ModelPuller::SyncSteps(RegistryClient& client,
                                                        const Reference& reference,
                                                        const FetchedModel& model,
                                                        const TransferProgress& progress) {
  std::vector<SyncOutcome> steps;
  if (model.metadata.platform != kPipelinePlatform) {
    return steps;
  }
  PERCH_ASSIGN_OR_RETURN(const auto pinned, PinnedStepsOf(reference, model.metadata));
  for (const PinnedStep& step : pinned) {
    // By digest: the registry's copy and the cached one are the same bytes,
    // so an unreachable registry falls back to the cache as for any model.
    auto synced = Sync(client, step.reference, progress);
    const Status status = synced.ok()
                              ? CheckPinnedStep(step, synced->record.model, synced->record.version)
                              : synced.status();
    if (!status.ok()) {
      return Status(
          status.code(),
          fmt::format("pipeline '{}': step {} (model '{}' pinned to {}): {}", model.metadata.name,
                      step.steps, step.model, step.reference.ToString(), status.message()));
    }
    steps.push_back(std::move(synced).value());
  }
  return steps;
}

Result<SyncOutcome> ModelPuller::Sync(RegistryClient& client, const Reference& reference,
                                      const TransferProgress& progress) {
  const std::string key = reference.ToString();
  auto fetched = FetchModel(client, reference, *blobs_, progress);
  Result<std::vector<SyncOutcome>> steps = std::vector<SyncOutcome>{};
  if (fetched.ok()) {
    steps = SyncSteps(client, reference, *fetched, progress);
  }
  if (fetched.ok() && steps.ok()) {
    PERCH_ASSIGN_OR_RETURN(const bool installed, InstallModel(*blobs_, *fetched, models_, key));
    PulledRecord record{
        key,          fetched->digest,    fetched->metadata.name, fetched->metadata.version,
        NowRfc3339(), fetched->signatures};
    records_[key] = record;
    PERCH_RETURN_IF_ERROR(SaveRecords());
    return SyncOutcome{std::move(record),
                       false,
                       installed,
                       Status::Ok(),
                       std::move(fetched->signature_notes),
                       std::move(steps).value()};
  }
  if (fetched.ok()) {
    fetched = steps.status();  // a pipeline whose steps cannot be had is refused whole
  }
  const auto recorded = records_.find(key);
  if (recorded == records_.end()) {
    return fetched.status();
  }
  auto cached = LoadCachedModel(*blobs_, recorded->second.digest, recorded->second.signatures);
  if (!cached.ok()) {
    return Status(fetched.status().code(),
                  fmt::format("{}; and the cache cannot stand in: {}", fetched.status().message(),
                              cached.status().message()));
  }
  auto cached_steps = SyncSteps(client, reference, *cached, progress);
  if (!cached_steps.ok()) {
    return Status(fetched.status().code(),
                  fmt::format("{}; and the cache cannot stand in: {}", fetched.status().message(),
                              cached_steps.status().message()));
  }
  PERCH_ASSIGN_OR_RETURN(const bool installed, InstallModel(*blobs_, *cached, models_, key));
  return SyncOutcome{recorded->second, true, installed,
                     fetched.status(), {},   std::move(cached_steps).value()};
}

Status ModelPuller::Prune(const std::map<std::string, int64_t>& keep) {
  std::error_code error;
  for (const auto& model : fs::directory_iterator(models_, error)) {
    const std::string name = model.path().filename().string();
    const auto kept = keep.find(name);
    if (kept == keep.end()) {
      fs::remove_all(model.path(), error);
      if (error) {
        return Internal(
            fmt::format("cannot remove {}: {}", model.path().string(), error.message()));
      }
      continue;
    }
    for (const auto& version : fs::directory_iterator(model.path(), error)) {
      const std::string folder = version.path().filename().string();
      if (version.is_directory() &&
          (folder.starts_with(".staging-") ||
           (folder != std::to_string(kept->second) &&
            folder.find_first_not_of("0123456789") == std::string::npos))) {
        fs::remove_all(version.path(), error);
      }
    }
  }
  if (error) {
    return Internal(fmt::format("cannot prune {}: {}", models_.string(), error.message()));
  }
  return Status::Ok();
}

}  // namespace perch
