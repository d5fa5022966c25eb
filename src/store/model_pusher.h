// Pushes one model version to a registry as a perch model artifact
// (model_artifact.h): the files as layers, the metadata as the config blob,
// then the manifest under a tag.
//
// Threading: a free function; it uses `client` from the calling thread only.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "core/status.h"
#include "store/model_artifact.h"
#include "store/registry_client.h"

namespace perch {

// A file of the version folder to push: its path in the artifact (relative
// to the version folder) and where it is on disk.
struct LocalModelFile {
  std::string path;
  std::filesystem::path source;
};

struct PushOutcome {
  Digest manifest_digest = Sha256Of("");
  uint64_t total_bytes = 0;     // of every layer
  uint64_t uploaded_bytes = 0;  // of the layers the registry did not have
  int layers_uploaded = 0;
  int layers_skipped = 0;  // present already, or mounted
};

// Pushes `files` with `metadata` to `repository` and tags the manifest
// `tag`. Files are validated (paths, regular files, a model.onnx) before
// anything is sent; `mount_from` names a repository of the same registry to
// mount layers from. `progress` sees the bytes of all layers together.
Result<PushOutcome> PushModel(RegistryClient& client, const std::string& repository,
                              const std::string& tag, const ModelMetadata& metadata,
                              std::vector<LocalModelFile> files, const std::string& mount_from = "",
                              const TransferProgress& progress = nullptr);

// The manifest digest PushModel would give `files` with `metadata`, without
// a registry: what a model folder is known by before it is pushed.
// InvalidArgument as PushModel validates the files.
Result<Digest> ModelManifestDigest(const ModelMetadata& metadata,
                                   std::vector<LocalModelFile> files);

}  // namespace perch
