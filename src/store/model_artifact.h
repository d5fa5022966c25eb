// How one model version is stored in an OCI registry (docs/model-store.md):
// an OCI image manifest with artifactType application/vnd.perch.model.v1,
// a config blob with the model's metadata (application/vnd.perch.model.config.v1+json),
// and one uncompressed layer per file of the version folder, named by its
// org.cncf.model.filepath annotation (a path relative to the version folder).
//
// Plain data and pure functions: encoding is deterministic (same model, same
// digests), decoding validates everything a registry could get wrong or
// forge, paths above all. Thread-safe (no state).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "store/descriptor.h"
#include "store/digest.h"
#include "store/manifest.h"

namespace perch {

// One input or output as the model declares it; -1 marks a dynamic dim.
struct TensorInfo {
  std::string name;
  std::string datatype;  // the Open Inference Protocol name: "FP32", "INT64", ...
  std::vector<int64_t> shape;
};

// What the config blob says about the model.
struct ModelMetadata {
  std::string name;  // the model's name in a repository, [A-Za-z0-9_.-]{1,128}
  int64_t version = 1;
  std::string platform = "onnx";
  // An .onnx file runs on any CPU architecture ONNX Runtime supports.
  std::vector<std::string> architectures = {"amd64", "arm64"};
  std::vector<TensorInfo> inputs;
  std::vector<TensorInfo> outputs;
  // The model's model.json, compact JSON; empty when the model has none.
  std::string model_config_json;
};

// A file of the version folder and the layer that carries it.
struct ModelFile {
  std::string path;  // relative to the version folder, '/'-separated
  Descriptor layer;
};

// The manifest of a model version, decoded and checked.
struct ModelArtifact {
  Manifest manifest;
  std::vector<ModelFile> files;
};

// Largest manifest or config blob perch reads: registries cap manifests at
// 4 MiB, and a model's config is far smaller.
inline constexpr uint64_t kMaxManifestBytes = 4 << 20;

// A layer path is relative, '/'-separated, without empty, "." or ".."
// components, backslashes or control characters, and at most 255 bytes: it
// can never leave the version folder it is installed into. InvalidArgument
// naming the path otherwise.
Status ValidateModelFilePath(std::string_view path);

// The layer media type for a file of a model: ModelPack's weight type for
// the model and its data, its weight-config type for small text files.
std::string_view LayerMediaTypeFor(std::string_view path);

std::string EncodeModelConfig(const ModelMetadata& metadata);
// InvalidArgument naming the field that is missing or wrong.
Result<ModelMetadata> DecodeModelConfig(std::string_view json);

// The one layer of a pipeline's manifest (platform "pipeline",
// pipeline_artifact.h): the OCI empty descriptor, "{}".
Descriptor PipelineLayer();

// The manifest of a model version whose config blob is `config` and whose
// files are `files` (in the order given; callers sort them by path).
std::string EncodeModelManifest(const ModelMetadata& metadata, const Descriptor& config,
                                const std::vector<ModelFile>& files);

// Checks that `manifest` (read by ParseManifest, manifest.h) is a perch
// model: an image manifest, not an index, with perch's artifact type and
// config media type, one layer per file with a valid, unique path, and a
// model.onnx; or a pipeline, whose only layer is the empty descriptor and
// which has no files. InvalidArgument naming the problem otherwise.
Result<ModelArtifact> ModelArtifactOf(const Manifest& manifest);

}  // namespace perch
