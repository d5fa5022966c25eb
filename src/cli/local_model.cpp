#include "cli/local_model.h"

#include <fmt/format.h>

#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "engine/onnx_external_data.h"
#include "models/model_config.h"
#include "models/repository.h"
#include "store/model_puller.h"

namespace perch::cli {
namespace {

namespace fs = std::filesystem;

Result<std::string> ReadText(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return NotFound(fmt::format("cannot open {}", path.string()));
  }
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::vector<TensorInfo> TensorsOf(const std::vector<TensorSpec>& specs) {
  std::vector<TensorInfo> tensors;
  for (const auto& spec : specs) {
    tensors.push_back({spec.name, std::string(ToString(spec.datatype)), spec.shape});
  }
  return tensors;
}

// Every file of a version folder, by its path relative to the folder.
Result<std::vector<LocalModelFile>> FilesOfFolder(const fs::path& folder) {
  std::vector<LocalModelFile> files;
  std::error_code error;
  for (auto it = fs::recursive_directory_iterator(folder, error);
       !error && it != fs::recursive_directory_iterator(); it.increment(error)) {
    const auto status = it->symlink_status(error);
    if (fs::is_directory(status)) {
      continue;
    }
    const std::string path = fs::relative(it->path(), folder, error).generic_string();
    if (!fs::is_regular_file(status)) {
      return InvalidArgument(fmt::format(
          "{} is not a regular file; links and special files are not pushed", it->path().string()));
    }
    if (path == kArtifactRecordFile || IsSignatureFileName(path)) {
      continue;  // where this copy came from, and its signatures: not part of the model
    }
    files.push_back({path, it->path()});
  }
  if (error) {
    return Internal(fmt::format("cannot list {}: {}", folder.string(), error.message()));
  }
  return files;
}

Result<std::string> ModelJsonOf(const fs::path& model_folder) {
  const fs::path file = model_folder / "model.json";
  std::error_code error;
  if (!fs::exists(file, error)) {
    return std::string();
  }
  PERCH_ASSIGN_OR_RETURN(const std::string text, ReadText(file));
  // What the agent would refuse is refused before it reaches a registry.
  if (auto parsed = ParseModelConfig(text); !parsed.ok()) {
    return InvalidArgument(fmt::format("{}: {}", file.string(), parsed.status().message()));
  }
  return nlohmann::json::parse(text, nullptr, false).dump();
}

// A model.json with a "runtime": the model is a server of its own.
bool IsProcessModel(const std::string& model_config_json) {
  if (model_config_json.empty()) {
    return false;
  }
  const auto config = ParseModelConfig(model_config_json);
  return config.ok() && config->runtime.has_value();
}

}  // namespace

Result<LocalModel> ReadLocalModel(const fs::path& path, const LocalModelOptions& options,
                                  Engine& engine) {
  std::error_code error;
  LocalModel model;
  fs::path version_folder;
  fs::path model_file;
  if (fs::is_regular_file(path, error)) {
    if (path.extension() != ".onnx") {
      return InvalidArgument(fmt::format("{} is not an .onnx file", path.string()));
    }
    model.metadata.name = options.name.empty() ? options.default_name : options.name;
    model.metadata.version = options.version.value_or(1);
    model_file = path;
    version_folder = path.parent_path();
    model.files.push_back({"model.onnx", path});
    PERCH_ASSIGN_OR_RETURN(const std::string bytes, ReadText(path));
    PERCH_ASSIGN_OR_RETURN(const auto locations, ListOnnxExternalDataLocations(bytes));
    for (const auto& location : locations) {
      PERCH_RETURN_IF_ERROR(ValidateModelFilePath(location));
      model.files.push_back({location, version_folder / location});
    }
  } else if (fs::is_directory(path, error)) {
    const fs::path folder = fs::absolute(path, error).lexically_normal();
    const fs::path clean = folder.filename().empty() ? folder.parent_path() : folder;
    if (fs::exists(clean / "model.onnx", error)) {
      const auto version = ParseModelVersion(clean.filename().string());
      if (!version) {
        return InvalidArgument(fmt::format(
            "{} holds a model.onnx but is not named by a version number (NAME/N/)", path.string()));
      }
      model.metadata.name =
          options.name.empty() ? clean.parent_path().filename().string() : options.name;
      model.metadata.version = *version;
      version_folder = clean;
      PERCH_ASSIGN_OR_RETURN(model.metadata.model_config_json, ModelJsonOf(clean.parent_path()));
    } else {
      model.metadata.name = options.name.empty() ? clean.filename().string() : options.name;
      PERCH_ASSIGN_OR_RETURN(const ModelOnDisk disk,
                             ScanModel(clean.parent_path(), clean.filename().string()));
      if (disk.versions.empty()) {
        return NotFound(fmt::format("{} has no version folder with a model.onnx", path.string()));
      }
      const int64_t version = options.version.value_or(disk.versions.rbegin()->first);
      if (!disk.versions.contains(version)) {
        return NotFound(fmt::format("{} has no version {}", path.string(), version));
      }
      model.metadata.version = version;
      version_folder = clean / std::to_string(version);
      PERCH_ASSIGN_OR_RETURN(model.metadata.model_config_json, ModelJsonOf(clean));
    }
    model_file = version_folder / "model.onnx";
    PERCH_ASSIGN_OR_RETURN(model.files, FilesOfFolder(version_folder));
  } else {
    return NotFound(fmt::format("{} does not exist", path.string()));
  }
  if (fs::is_regular_file(fs::symlink_status(version_folder / kSignatureFile, error))) {
    model.signature = version_folder / kSignatureFile;
  }
  if (!IsValidModelName(model.metadata.name)) {
    return InvalidArgument(
        fmt::format("\"{}\" is not a valid model name ([A-Za-z0-9_.-], at most 128); pass --name",
                    model.metadata.name));
  }
  if (IsProcessModel(model.metadata.model_config_json)) {
    // Its server declares its inputs and outputs when it runs; nothing
    // here starts it. The architectures are whatever its files run on.
    model.metadata.platform = "process";
    return model;
  }
  PERCH_ASSIGN_OR_RETURN(const auto session, engine.Load(model_file, version_folder, {}));
  model.metadata.inputs = TensorsOf(session->Signature().inputs);
  model.metadata.outputs = TensorsOf(session->Signature().outputs);
  return model;
}

}  // namespace perch::cli
