#include "store/model_artifact.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <set>

#include "store/media_types.h"
#include "store/pipeline_artifact.h"

namespace perch {
namespace {

using nlohmann::json;
using nlohmann::ordered_json;

// nlohmann's parser throws only when asked to; every parse here passes
// allow_exceptions = false, and every access checks the type first.
json ParseJson(std::string_view text) { return json::parse(text, nullptr, false); }

bool IsValidModelName(std::string_view name) {
  if (name.empty() || name.size() > 128 || name == "." || name == "..") {
    return false;
  }
  return name.find_first_not_of(
             "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") ==
         std::string_view::npos;
}

const json* Field(const json& object, const char* key) {
  const auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

Result<std::string> StringField(const json& object, const char* key, std::string_view what) {
  const json* value = Field(object, key);
  if (value == nullptr || !value->is_string()) {
    return InvalidArgument(fmt::format("{}: \"{}\" must be a string", what, key));
  }
  return value->get<std::string>();
}

ordered_json EncodeDescriptor(const Descriptor& descriptor) {
  ordered_json value = {{"mediaType", descriptor.media_type},
                        {"digest", descriptor.digest.str()},
                        {"size", descriptor.size}};
  if (!descriptor.annotations.empty()) {
    value["annotations"] = descriptor.annotations;
  }
  return value;
}

ordered_json EncodeTensors(const std::vector<TensorInfo>& tensors) {
  ordered_json list = ordered_json::array();
  for (const auto& tensor : tensors) {
    list.push_back({{"name", tensor.name}, {"datatype", tensor.datatype}, {"shape", tensor.shape}});
  }
  return list;
}

Result<std::vector<TensorInfo>> DecodeTensors(const json& config, const char* key) {
  const json* list = Field(config, key);
  if (list == nullptr || !list->is_array()) {
    return InvalidArgument(fmt::format("model config: \"{}\" must be an array", key));
  }
  std::vector<TensorInfo> tensors;
  for (const json& item : *list) {
    const std::string what = fmt::format("model config: an entry of \"{}\"", key);
    if (!item.is_object()) {
      return InvalidArgument(what + " must be an object");
    }
    TensorInfo tensor;
    PERCH_ASSIGN_OR_RETURN(tensor.name, StringField(item, "name", what));
    PERCH_ASSIGN_OR_RETURN(tensor.datatype, StringField(item, "datatype", what));
    const json* shape = Field(item, "shape");
    if (shape == nullptr || !shape->is_array()) {
      return InvalidArgument(what + ": \"shape\" must be an array of integers");
    }
    for (const json& dim : *shape) {
      if (!dim.is_number_integer()) {
        return InvalidArgument(what + ": \"shape\" must be an array of integers");
      }
      tensor.shape.push_back(dim.get<int64_t>());
    }
    tensors.push_back(std::move(tensor));
  }
  return tensors;
}

}  // namespace

Descriptor PipelineLayer() {
  return Descriptor{
      std::string(media_type::kOciEmptyConfig), Sha256Of(kEmptyBlob), kEmptyBlob.size(), {}};
}

Status ValidateModelFilePath(std::string_view path) {
  const auto refuse = [path](std::string_view why) {
    return InvalidArgument(fmt::format("model file path \"{}\" {}", path, why));
  };
  if (path.empty() || path.size() > 255) {
    return refuse("must be 1 to 255 bytes long");
  }
  if (path.front() == '/') {
    return refuse("is absolute");
  }
  for (const char c : path) {
    if (c == '\\' || static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return refuse("holds a backslash or a control character");
    }
  }
  size_t start = 0;
  while (start <= path.size()) {
    const size_t slash = path.find('/', start);
    const std::string_view component = path.substr(
        start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (component.empty() || component == "." || component == "..") {
      return refuse("has an empty, \".\" or \"..\" component");
    }
    if (slash == std::string_view::npos) {
      break;
    }
    start = slash + 1;
  }
  return Status::Ok();
}

std::string_view LayerMediaTypeFor(std::string_view path) {
  for (const std::string_view text_suffix : {".json", ".txt", ".md", ".yaml", ".yml"}) {
    if (path.ends_with(text_suffix)) {
      return media_type::kModelPackWeightConfigRaw;
    }
  }
  return media_type::kModelPackWeightRaw;
}

std::string EncodeModelConfig(const ModelMetadata& metadata) {
  ordered_json config = {
      {"name", metadata.name},
      {"version", metadata.version},
      {"platform", metadata.platform},
      {"architectures", metadata.architectures},
      {"inputs", EncodeTensors(metadata.inputs)},
      {"outputs", EncodeTensors(metadata.outputs)},
  };
  if (!metadata.model_config_json.empty()) {
    config["model_config"] = ordered_json::parse(metadata.model_config_json, nullptr, false);
  }
  return config.dump();
}

Result<ModelMetadata> DecodeModelConfig(std::string_view text) {
  const json config = ParseJson(text);
  if (!config.is_object()) {
    return InvalidArgument("the model config blob is not a JSON object");
  }
  ModelMetadata metadata;
  PERCH_ASSIGN_OR_RETURN(metadata.name, StringField(config, "name", "model config"));
  if (!IsValidModelName(metadata.name)) {
    return InvalidArgument(
        fmt::format("model config: name \"{}\" is not a valid model name ([A-Za-z0-9_.-]{{1,128}})",
                    metadata.name));
  }
  const json* version = Field(config, "version");
  if (version == nullptr || !version->is_number_integer() || version->get<int64_t>() < 1) {
    return InvalidArgument("model config: \"version\" must be a positive integer");
  }
  metadata.version = version->get<int64_t>();
  PERCH_ASSIGN_OR_RETURN(metadata.platform, StringField(config, "platform", "model config"));
  // "process": a model that is a server of its own (model.json "runtime");
  // "pipeline": model.json chains other models (pipeline_artifact.h).
  if (metadata.platform != "onnx" && metadata.platform != "process" &&
      metadata.platform != kPipelinePlatform) {
    return InvalidArgument(
        fmt::format("model config: platform \"{}\" is not one perch runs (onnx, process, pipeline)",
                    metadata.platform));
  }
  metadata.architectures.clear();
  if (const json* architectures = Field(config, "architectures"); architectures != nullptr) {
    if (!architectures->is_array()) {
      return InvalidArgument("model config: \"architectures\" must be an array of strings");
    }
    for (const json& architecture : *architectures) {
      if (!architecture.is_string()) {
        return InvalidArgument("model config: \"architectures\" must be an array of strings");
      }
      metadata.architectures.push_back(architecture.get<std::string>());
    }
  }
  PERCH_ASSIGN_OR_RETURN(metadata.inputs, DecodeTensors(config, "inputs"));
  PERCH_ASSIGN_OR_RETURN(metadata.outputs, DecodeTensors(config, "outputs"));
  if (const json* model_config = Field(config, "model_config"); model_config != nullptr) {
    if (!model_config->is_object()) {
      return InvalidArgument("model config: \"model_config\" (model.json) must be an object");
    }
    metadata.model_config_json = model_config->dump();
  }
  return metadata;
}

std::string EncodeModelManifest(const ModelMetadata& metadata, const Descriptor& config,
                                const std::vector<ModelFile>& files) {
  ordered_json layers = ordered_json::array();
  for (const auto& file : files) {
    Descriptor layer = file.layer;
    layer.annotations[std::string(annotation::kTitle)] = file.path;
    layer.annotations[std::string(annotation::kModelPackFilepath)] = file.path;
    layers.push_back(EncodeDescriptor(layer));
  }
  if (metadata.platform == kPipelinePlatform) {
    // A pipeline has no files; OCI's guidance for an artifact without
    // blobs is one empty descriptor, which every registry accepts.
    layers.push_back(EncodeDescriptor(PipelineLayer()));
  }
  ordered_json annotations = {{annotation::kTitle, metadata.name},
                              {annotation::kVersion, std::to_string(metadata.version)}};
  if (metadata.platform != "onnx") {
    annotations[std::string(annotation::kPerchPlatform)] = metadata.platform;
  }
  const ordered_json manifest = {
      {"schemaVersion", 2},
      {"mediaType", media_type::kOciManifest},
      {"artifactType", media_type::kPerchModelArtifact},
      {"config", EncodeDescriptor(config)},
      {"layers", std::move(layers)},
      {"annotations", std::move(annotations)},
  };
  return manifest.dump();
}

Result<ModelArtifact> ModelArtifactOf(const Manifest& manifest) {
  if (manifest.IsIndex()) {
    return InvalidArgument(
        "the reference names an image index (a list of manifests), not a model manifest");
  }
  if (manifest.artifact_type != media_type::kPerchModelArtifact ||
      manifest.config.media_type != media_type::kPerchModelConfig) {
    return InvalidArgument(fmt::format(
        "not a perch model: artifactType \"{}\" and config media type \"{}\" (expected {} and {})",
        manifest.artifact_type, manifest.config.media_type, media_type::kPerchModelArtifact,
        media_type::kPerchModelConfig));
  }
  if (manifest.config.size > kMaxManifestBytes) {
    return InvalidArgument(fmt::format("the model config blob is {} bytes, more than {} allowed",
                                       manifest.config.size, kMaxManifestBytes));
  }
  ModelArtifact artifact{manifest, {}};
  const auto platform = manifest.annotations.find(std::string(annotation::kPerchPlatform));
  if (platform != manifest.annotations.end() && platform->second == kPipelinePlatform) {
    for (const auto& layer : manifest.layers) {
      if (layer.media_type != media_type::kOciEmptyConfig || layer.digest != Sha256Of(kEmptyBlob)) {
        return InvalidArgument(fmt::format(
            "the pipeline manifest has layer {} ({}); a pipeline's only layer is the empty "
            "descriptor",
            layer.digest.str(), layer.media_type));
      }
    }
    return artifact;
  }
  std::set<std::string> paths;
  for (const auto& layer : manifest.layers) {
    auto it = layer.annotations.find(std::string(annotation::kModelPackFilepath));
    if (it == layer.annotations.end()) {
      it = layer.annotations.find(std::string(annotation::kTitle));
    }
    if (it == layer.annotations.end()) {
      return InvalidArgument(fmt::format("layer {} has no {} annotation naming its file",
                                         layer.digest.str(), annotation::kModelPackFilepath));
    }
    PERCH_RETURN_IF_ERROR(ValidateModelFilePath(it->second));
    // "a" and "a/b" cannot both be files.
    for (const auto& other : paths) {
      if (other == it->second || other.starts_with(it->second + "/") ||
          it->second.starts_with(other + "/")) {
        return InvalidArgument(
            fmt::format("model file paths \"{}\" and \"{}\" collide", other, it->second));
      }
    }
    paths.insert(it->second);
    artifact.files.push_back(ModelFile{it->second, layer});
  }
  // A process model (model.json "runtime") has whatever files its server
  // needs; an ONNX model must have its model.onnx.
  const bool process = platform != manifest.annotations.end() && platform->second == "process";
  if (process ? paths.empty() : !paths.contains("model.onnx")) {
    return InvalidArgument(process ? "the process model has no file layers"
                                   : "the model has no model.onnx layer");
  }
  return artifact;
}

}  // namespace perch
