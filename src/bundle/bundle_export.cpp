#include "bundle/bundle_export.h"

#include <fmt/chrono.h>
#include <fmt/format.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <set>

#include "bundle/bundle_writer.h"
#include "store/media_types.h"
#include "store/signature_referrers.h"

namespace perch::bundle {
namespace {

using nlohmann::ordered_json;

ordered_json IndexEntry(const Digest& digest, uint64_t size, std::string_view artifact_type,
                        const std::string& ref) {
  ordered_json entry = {{"mediaType", media_type::kOciManifest},
                        {"digest", digest.str()},
                        {"size", size},
                        {"artifactType", artifact_type}};
  if (!ref.empty()) {
    entry["annotations"] = {{kRefNameAnnotation, ref}};
  }
  return entry;
}

std::string NowRfc3339() {
  return fmt::format(
      "{:%Y-%m-%dT%H:%M:%SZ}",
      fmt::gmtime(std::chrono::system_clock::to_time_t(std::chrono::system_clock::now())));
}

}  // namespace

std::string RefNameOf(const std::string& repository, const std::string& tag_or_digest) {
  return repository + (tag_or_digest.starts_with("sha256:") ? "@" : ":") + tag_or_digest;
}

Result<LocationState> ExportBundle(const std::filesystem::path& out, BlobStore& blobs,
                                   const std::vector<ExportModel>& models,
                                   const std::string& location, int64_t generation,
                                   const signing::PrivateKey& key) {
  if (generation < 1) {
    return InvalidArgument("the generation must be 1 or more");
  }
  LocationState state{location, generation, NowRfc3339(), {}};
  std::set<Digest> digests;
  std::set<std::string> names;
  ordered_json entries = ordered_json::array();
  for (const ExportModel& exported : models) {
    const FetchedModel& model = exported.model;
    if (!IsValidRefName(exported.ref)) {
      return InvalidArgument(fmt::format("\"{}\" cannot name a model in a bundle", exported.ref));
    }
    if (!names.insert(model.metadata.name).second) {
      return InvalidArgument(
          fmt::format("two references hold model '{}'; a location serves one version of a name",
                      model.metadata.name));
    }
    PERCH_ASSIGN_OR_RETURN(const uint64_t manifest_size, blobs.Size(model.digest));
    digests.insert(model.digest);
    digests.insert(model.artifact.manifest.config.digest);
    for (const ModelFile& file : model.artifact.files) {
      digests.insert(file.layer.digest);
    }
    entries.push_back(
        IndexEntry(model.digest, manifest_size, media_type::kPerchModelArtifact, exported.ref));
    for (const Digest& signature : model.signatures) {
      PERCH_ASSIGN_OR_RETURN(const std::string bundle,
                             blobs.Read(signature, kMaxSignatureBundleBytes));
      const std::string referrer = EncodeSignatureReferrer(
          Descriptor{std::string(media_type::kOciManifest), model.digest, manifest_size}, bundle);
      PERCH_ASSIGN_OR_RETURN(const Digest referrer_digest, blobs.Put(referrer));
      PERCH_ASSIGN_OR_RETURN(const Digest empty, blobs.Put("{}"));
      digests.insert({signature, referrer_digest, empty});
      entries.push_back(IndexEntry(referrer_digest, referrer.size(), kSigstoreBundleMediaType, ""));
    }
    state.models.push_back(
        StateModel{model.metadata.name, model.metadata.version, exported.ref, model.digest});
  }
  PERCH_ASSIGN_OR_RETURN(const std::string signed_state,
                         signing::SignDsse(kStateArtifactType, EncodeLocationState(state), key));
  const std::string state_manifest = EncodeStateManifest(signed_state);
  PERCH_ASSIGN_OR_RETURN(const Digest signed_digest, blobs.Put(signed_state));
  PERCH_ASSIGN_OR_RETURN(const Digest manifest_digest, blobs.Put(state_manifest));
  PERCH_ASSIGN_OR_RETURN(const Digest empty, blobs.Put("{}"));
  digests.insert({signed_digest, manifest_digest, empty});
  entries.push_back(IndexEntry(manifest_digest, state_manifest.size(), kStateArtifactType,
                               std::string(kStateRefName)));
  const ordered_json index = {
      {"schemaVersion", 2}, {"mediaType", media_type::kOciIndex}, {"manifests", entries}};
  PERCH_RETURN_IF_ERROR(WriteBundle(out, blobs, digests, index.dump()));
  return state;
}

}  // namespace perch::bundle
