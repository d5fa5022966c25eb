#include "store/model_pusher.h"

#include <fmt/format.h>

#include <algorithm>

#include "store/manifest.h"
#include "store/media_types.h"
#include "store/pipeline_artifact.h"
#include "store/signature_referrers.h"

namespace perch {

namespace fs = std::filesystem;

namespace {

// The layers and manifest of `files` with `metadata`, checked with the parser
// the pull side and the registry use, so an artifact no perch could install
// is caught before anything is sent.
struct BuiltManifest {
  std::vector<ModelFile> layers;
  std::string config;
  std::string manifest;
  uint64_t total_bytes = 0;
};

Result<BuiltManifest> BuildManifest(const ModelMetadata& metadata,
                                    std::vector<LocalModelFile>& files) {
  std::sort(files.begin(), files.end(),
            [](const LocalModelFile& a, const LocalModelFile& b) { return a.path < b.path; });
  BuiltManifest built;
  for (const auto& file : files) {
    PERCH_RETURN_IF_ERROR(ValidateModelFilePath(file.path));
    std::error_code error;
    // The layer carries the bytes of a regular file; a link could point
    // anywhere, so it is not followed.
    if (!fs::is_regular_file(fs::symlink_status(file.source, error))) {
      return InvalidArgument(
          fmt::format("{} is not a regular file (links are not pushed)", file.source.string()));
    }
    const uint64_t size = fs::file_size(file.source, error);
    PERCH_ASSIGN_OR_RETURN(const Digest digest, Sha256OfFile(file.source));
    built.layers.push_back(ModelFile{
        file.path, Descriptor{std::string(LayerMediaTypeFor(file.path)), digest, size, {}}});
    built.total_bytes += size;
  }
  built.config = EncodeModelConfig(metadata);
  const Descriptor config_descriptor{
      std::string(media_type::kPerchModelConfig), Sha256Of(built.config), built.config.size(), {}};
  built.manifest = EncodeModelManifest(metadata, config_descriptor, built.layers);
  PERCH_ASSIGN_OR_RETURN(const Manifest decoded,
                         ParseManifest(media_type::kOciManifest, built.manifest));
  PERCH_RETURN_IF_ERROR(ModelArtifactOf(decoded).status());
  return built;
}

}  // namespace

Result<Digest> ModelManifestDigest(const ModelMetadata& metadata,
                                   std::vector<LocalModelFile> files) {
  PERCH_ASSIGN_OR_RETURN(const BuiltManifest built, BuildManifest(metadata, files));
  return Sha256Of(built.manifest);
}

Result<PushOutcome> PushModel(RegistryClient& client, const std::string& repository,
                              const std::string& tag, const ModelMetadata& metadata,
                              std::vector<LocalModelFile> files, const std::string& mount_from,
                              const TransferProgress& progress) {
  PERCH_ASSIGN_OR_RETURN(const BuiltManifest built, BuildManifest(metadata, files));
  const std::vector<ModelFile>& layers = built.layers;
  const std::string& config = built.config;
  const std::string& manifest = built.manifest;
  PushOutcome outcome;
  outcome.total_bytes = built.total_bytes;

  uint64_t done = 0;
  for (size_t i = 0; i < layers.size(); ++i) {
    const auto& layer = layers[i].layer;
    const uint64_t before = done;
    PERCH_ASSIGN_OR_RETURN(const BlobPush pushed,
                           client.PushBlob(repository, layer.digest, layer.size, files[i].source,
                                           mount_from, [&](uint64_t layer_done, uint64_t) {
                                             if (progress) {
                                               progress(before + layer_done, outcome.total_bytes);
                                             }
                                           }));
    done += layer.size;
    if (pushed == BlobPush::kUploaded) {
      ++outcome.layers_uploaded;
      outcome.uploaded_bytes += layer.size;
    } else {
      ++outcome.layers_skipped;
    }
  }
  if (metadata.platform == kPipelinePlatform) {
    PERCH_RETURN_IF_ERROR(client.PushSmallBlob(repository, std::string(kEmptyBlob)).status());
  }
  PERCH_RETURN_IF_ERROR(client.PushSmallBlob(repository, config).status());
  PERCH_ASSIGN_OR_RETURN(
      outcome.manifest_digest,
      client.PutManifest(repository, tag, manifest, std::string(media_type::kOciManifest)));
  outcome.manifest_size = manifest.size();
  return outcome;
}

Result<Digest> PushStoredModel(RegistryClient& client, const std::string& repository,
                               const std::string& tag, const BlobStore& blobs,
                               const Digest& manifest, const std::vector<Digest>& signatures) {
  PERCH_ASSIGN_OR_RETURN(const std::string bytes, blobs.Read(manifest, kMaxManifestBytes));
  PERCH_ASSIGN_OR_RETURN(const Manifest parsed, ParseManifest(media_type::kOciManifest, bytes));
  PERCH_ASSIGN_OR_RETURN(const ModelArtifact artifact, ModelArtifactOf(parsed));
  for (const ModelFile& file : artifact.files) {
    PERCH_RETURN_IF_ERROR(client
                              .PushBlob(repository, file.layer.digest, file.layer.size,
                                        blobs.PathOf(file.layer.digest))
                              .status());
  }
  PERCH_ASSIGN_OR_RETURN(const std::string config,
                         blobs.Read(parsed.config.digest, kMaxManifestBytes));
  for (const Descriptor& layer : parsed.layers) {
    if (layer.digest == Sha256Of(kEmptyBlob)) {  // a pipeline's
      PERCH_RETURN_IF_ERROR(client.PushSmallBlob(repository, std::string(kEmptyBlob)).status());
    }
  }
  PERCH_RETURN_IF_ERROR(client.PushSmallBlob(repository, config).status());
  PERCH_ASSIGN_OR_RETURN(
      const Digest pushed,
      client.PutManifest(repository, tag, bytes, std::string(media_type::kOciManifest)));
  for (const Digest& signature : signatures) {
    PERCH_ASSIGN_OR_RETURN(const std::string bundle,
                           blobs.Read(signature, kMaxSignatureBundleBytes));
    PERCH_RETURN_IF_ERROR(
        AttachSignature(client, repository,
                        Descriptor{std::string(media_type::kOciManifest), pushed, bytes.size()},
                        bundle)
            .status());
  }
  return pushed;
}

}  // namespace perch
