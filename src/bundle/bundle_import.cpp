#include "bundle/bundle_import.h"

#include <fcntl.h>
#include <fmt/chrono.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "core/files.h"
#include "store/media_types.h"
#include "store/model_artifact.h"
#include "store/model_puller.h"
#include "store/signature_referrers.h"

namespace perch::bundle {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr std::string_view kCurrentFile = "current.json";

// Holds an exclusive flock on a file for its lifetime.
class FileLock {
 public:
  static Result<FileLock> Acquire(const fs::path& path) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || ::flock(fd, LOCK_EX) != 0) {
      if (fd >= 0) {
        ::close(fd);
      }
      return Internal(fmt::format("cannot lock {}", path.string()));
    }
    return FileLock(fd);
  }
  FileLock(FileLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;
  FileLock& operator=(FileLock&&) = delete;
  ~FileLock() {
    if (fd_ >= 0) {
      ::close(fd_);
    }
  }

 private:
  explicit FileLock(int fd) : fd_(fd) {}
  int fd_;
};

std::string NowRfc3339() {
  return fmt::format(
      "{:%Y-%m-%dT%H:%M:%SZ}",
      fmt::gmtime(std::chrono::system_clock::to_time_t(std::chrono::system_clock::now())));
}

// A blob the bundle must hold with the size a descriptor gives it.
Status CheckHeld(const BundleContents& contents, const Descriptor& descriptor,
                 const std::string& what) {
  const auto held = contents.blobs.find(descriptor.digest);
  if (held == contents.blobs.end()) {
    return InvalidArgument(fmt::format("{} names blob {}, which the bundle does not hold", what,
                                       descriptor.digest.str()));
  }
  if (held->second != descriptor.size) {
    return InvalidArgument(fmt::format("{} says blob {} has {} bytes; the bundle's has {}", what,
                                       descriptor.digest.str(), descriptor.size, held->second));
  }
  return Status::Ok();
}

// The verified state: the state manifest's DSSE bundle, checked with the
// trusted keys.
Result<LocationState> ReadState(const BlobStore& blobs, const BundleContents& contents,
                                const Manifest& index,
                                const std::vector<signing::PublicKey>& trusted) {
  const Descriptor* entry = nullptr;
  for (const Descriptor& candidate : index.manifests) {
    if (candidate.artifact_type == kStateArtifactType) {
      if (entry != nullptr) {
        return InvalidArgument("the bundle holds two location states");
      }
      entry = &candidate;
    }
  }
  if (entry == nullptr) {
    return InvalidArgument(
        fmt::format("the bundle holds no location state (artifactType {})", kStateArtifactType));
  }
  PERCH_ASSIGN_OR_RETURN(const std::string bytes, blobs.Read(entry->digest, kMaxManifestBytes));
  PERCH_ASSIGN_OR_RETURN(const Manifest manifest,
                         ParseImageManifest(media_type::kOciManifest, bytes));
  if (manifest.artifact_type != kStateArtifactType || manifest.layers.size() != 1 ||
      manifest.layers[0].media_type != kSigstoreBundleMediaType) {
    return InvalidArgument("the location state manifest is not one signed state");
  }
  PERCH_RETURN_IF_ERROR(CheckHeld(contents, manifest.layers[0], "the location state"));
  PERCH_ASSIGN_OR_RETURN(const std::string signed_state,
                         blobs.Read(manifest.layers[0].digest, kMaxSignatureBundleBytes));
  auto payload = signing::VerifyDsse(signed_state, trusted, kStateArtifactType);
  if (!payload.ok()) {
    return Status(payload.status().code(),
                  "the location state's signature does not hold: " + payload.status().message());
  }
  return DecodeLocationState(*payload);
}

// A model of the state, checked against the bundle, with its signatures.
Result<FetchedModel> ReadModel(const BlobStore& blobs, const BundleContents& contents,
                               const Manifest& index, const StateModel& wanted) {
  const std::string what = fmt::format("model {} ({})", wanted.name, wanted.ref);
  const Descriptor* entry = nullptr;
  for (const Descriptor& candidate : index.manifests) {
    if (candidate.digest == wanted.digest) {
      entry = &candidate;
      break;
    }
  }
  if (entry == nullptr) {
    return InvalidArgument(fmt::format("the state names {} as {}, which the index does not list",
                                       what, wanted.digest.str()));
  }
  PERCH_RETURN_IF_ERROR(CheckHeld(contents, *entry, "index.json"));
  PERCH_ASSIGN_OR_RETURN(const std::string bytes, blobs.Read(entry->digest, kMaxManifestBytes));
  auto manifest = ParseImageManifest(media_type::kOciManifest, bytes);
  if (!manifest.ok()) {
    return InvalidArgument(fmt::format("{}: {}", what, manifest.status().message()));
  }
  auto artifact = ModelArtifactOf(*manifest);
  if (!artifact.ok()) {
    return InvalidArgument(fmt::format("{}: {}", what, artifact.status().message()));
  }
  PERCH_RETURN_IF_ERROR(CheckHeld(contents, manifest->config, what));
  for (const ModelFile& file : artifact->files) {
    PERCH_RETURN_IF_ERROR(CheckHeld(contents, file.layer, what + " file " + file.path));
  }
  PERCH_ASSIGN_OR_RETURN(const std::string config,
                         blobs.Read(manifest->config.digest, kMaxManifestBytes));
  auto metadata = DecodeModelConfig(config);
  if (!metadata.ok()) {
    return InvalidArgument(fmt::format("{}: {}", what, metadata.status().message()));
  }
  if (metadata->name != wanted.name || metadata->version != wanted.version) {
    return InvalidArgument(fmt::format("{}: its manifest holds model {} version {}, not version {}",
                                       what, metadata->name, metadata->version, wanted.version));
  }
  FetchedModel model{
      wanted.digest, std::move(artifact).value(), std::move(metadata).value(), {}, {}};
  for (const Descriptor& candidate : index.manifests) {
    if (candidate.artifact_type != kSigstoreBundleMediaType) {
      continue;
    }
    PERCH_RETURN_IF_ERROR(CheckHeld(contents, candidate, "index.json"));
    PERCH_ASSIGN_OR_RETURN(const std::string referrer_bytes,
                           blobs.Read(candidate.digest, kMaxManifestBytes));
    auto referrer = ParseImageManifest(media_type::kOciManifest, referrer_bytes);
    if (!referrer.ok() || referrer->layers.size() != 1 ||
        referrer->layers[0].media_type != kSigstoreBundleMediaType || !referrer->subject) {
      return InvalidArgument(fmt::format(
          "signature {} is not one Sigstore bundle in cosign's layout", candidate.digest.str()));
    }
    if (referrer->subject->digest != wanted.digest) {
      continue;
    }
    if (referrer->layers[0].size > kMaxSignatureBundleBytes) {
      return InvalidArgument(fmt::format("signature {} of {} is larger than {} bytes",
                                         candidate.digest.str(), what, kMaxSignatureBundleBytes));
    }
    PERCH_RETURN_IF_ERROR(CheckHeld(contents, referrer->layers[0], "signature of " + what));
    if (model.signatures.size() == kMaxSignatureReferrers) {
      return InvalidArgument(
          fmt::format("{} has more than {} signatures", what, kMaxSignatureReferrers));
    }
    model.signatures.push_back(referrer->layers[0].digest);
  }
  if (model.signatures.empty()) {
    return Status(StatusCode::kUnauthenticated, what + " is not signed");
  }
  return model;
}

// At least one signature of the installed version folder holds with a
// trusted key; none is malformed or made over other files.
Status VerifySignatures(const fs::path& folder, size_t count, const std::string& what,
                        const std::vector<signing::PublicKey>& trusted) {
  std::vector<fs::path> signatures;
  for (size_t i = 0; i < count; ++i) {
    signatures.push_back(folder / SignatureFileName(i));
  }
  auto verified =
      signing::VerifyModelSignatures(folder, signatures, trusted, {folder / kArtifactRecordFile});
  if (!verified.ok()) {
    return Status(verified.status().code(), what + ": " + verified.status().message());
  }
  return Status::Ok();
}

json StateModelsJson(const std::vector<StateModel>& models) {
  json list = json::array();
  for (const StateModel& model : models) {
    list.push_back({{"name", model.name},
                    {"version", model.version},
                    {"ref", model.ref},
                    {"digest", model.digest.str()}});
  }
  return list;
}

}  // namespace

Result<std::optional<SiteState>> ReadSiteState(const fs::path& state) {
  const fs::path file = state / "bundle" / kCurrentFile;
  std::error_code error;
  if (!fs::exists(file, error)) {
    return std::optional<SiteState>();
  }
  PERCH_ASSIGN_OR_RETURN(const std::string text, ReadFile(file));
  const json value = json::parse(text, nullptr, false);
  const auto bad = [&] {
    return InvalidArgument(
        fmt::format("{} is not perch's record of the imported bundle; move it "
                    "away (and import the site's bundle again)",
                    file.string()));
  };
  if (!value.is_object() || !value.contains("generation") ||
      !value["generation"].is_number_integer() || !value.contains("release") ||
      !value["release"].is_string()) {
    return bad();
  }
  SiteState site;
  site.generation = value["generation"].get<int64_t>();
  site.location = value.value("location", "");
  site.release = state / "bundle" / value["release"].get<std::string>();
  site.imported_at = value.value("imported_at", "");
  auto models = DecodeLocationState(
      json{{"generation", site.generation}, {"models", value.value("models", json::array())}}
          .dump());
  if (!models.ok()) {
    return bad();
  }
  site.models = std::move(models->models);
  return std::optional<SiteState>(std::move(site));
}

Result<SiteState> ImportBundle(const fs::path& bundle, const ImportOptions& options) {
  if (options.trusted.empty()) {
    return InvalidArgument(
        "a bundle is imported only with a trusted key: give --trust-key PEM or put the site's "
        "public keys in STATE/trust/");
  }
  const fs::path folder = options.state / "bundle";
  std::error_code error;
  fs::create_directories(folder / "releases", error);
  if (error) {
    return Internal(fmt::format("cannot create {}: {}", folder.string(), error.message()));
  }
  PERCH_ASSIGN_OR_RETURN(const FileLock lock, FileLock::Acquire(folder / "lock"));
  PERCH_ASSIGN_OR_RETURN(const auto current, ReadSiteState(options.state));
  PERCH_ASSIGN_OR_RETURN(auto blobs, BlobStore::Open(options.state / "blobs"));

  PERCH_ASSIGN_OR_RETURN(const BundleContents contents,
                         ReadBundleFile(bundle, *blobs, options.limits));
  PERCH_RETURN_IF_ERROR(CheckLayoutFile(contents.layout));
  PERCH_ASSIGN_OR_RETURN(const Manifest index, ParseBundleIndex(contents.index));
  for (const Descriptor& entry : index.manifests) {
    PERCH_RETURN_IF_ERROR(CheckHeld(contents, entry, "index.json"));
  }
  PERCH_ASSIGN_OR_RETURN(const LocationState state,
                         ReadState(*blobs, contents, index, options.trusted));
  if (current && state.generation <= current->generation) {
    return Status(StatusCode::kAlreadyExists,
                  fmt::format("the bundle's generation {} is not above the {} this site runs: "
                              "a bundle replayed or older is refused",
                              state.generation, current->generation));
  }
  std::vector<FetchedModel> models;
  for (const StateModel& wanted : state.models) {
    PERCH_ASSIGN_OR_RETURN(FetchedModel model, ReadModel(*blobs, contents, index, wanted));
    models.push_back(std::move(model));
  }

  // Everything is checked but the signatures over the files, which need
  // the files in place: installed in a folder of this import's own, which
  // becomes the release only once every signature holds.
  const fs::path staging = folder / fmt::format("releases/.staging-g{}", state.generation);
  fs::remove_all(staging, error);
  struct RemoveOnExit {
    const fs::path& path;
    ~RemoveOnExit() {
      std::error_code ignored;
      fs::remove_all(path, ignored);
    }
  } cleanup{staging};
  for (const FetchedModel& model : models) {
    PERCH_RETURN_IF_ERROR(
        InstallModel(*blobs, model, staging, "bundle:" + state.location).status());
    const fs::path version = staging / model.metadata.name / std::to_string(model.metadata.version);
    PERCH_RETURN_IF_ERROR(VerifySignatures(version, model.signatures.size(),
                                           fmt::format("model {}", model.metadata.name),
                                           options.trusted));
  }
  const std::string release_name = fmt::format("releases/g{}", state.generation);
  const fs::path release = folder / release_name;
  PERCH_RETURN_IF_ERROR(SyncTree(staging));
  fs::remove_all(release, error);
  fs::rename(staging, release, error);
  if (error) {
    return Internal(
        fmt::format("cannot move {} into place: {}", release.string(), error.message()));
  }
  PERCH_RETURN_IF_ERROR(SyncDirectory(release.parent_path()));
  SiteState site{state.generation, state.location, release, state.models, NowRfc3339(), {}};
  for (const FetchedModel& model : models) {
    site.signatures[model.metadata.name] = model.signatures;
  }
  if (options.before_commit) {
    if (Status done = options.before_commit(site, *blobs); !done.ok()) {
      fs::remove_all(release, error);
      return done;
    }
  }
  const json record = {{"generation", site.generation},
                       {"location", site.location},
                       {"release", release_name},
                       {"models", StateModelsJson(site.models)},
                       {"imported_at", site.imported_at}};
  PERCH_RETURN_IF_ERROR(WriteFileAtomically(folder / kCurrentFile, record.dump(2) + "\n"));
  // The release before stays: an agent may still serve it until it switches.
  for (const auto& entry : fs::directory_iterator(folder / "releases", error)) {
    if (entry.path() != release && (!current || entry.path() != current->release)) {
      fs::remove_all(entry.path(), error);
    }
  }
  return site;
}

}  // namespace perch::bundle
