// Reads a model on disk for `perch push`: a model folder in repository
// layout (NAME/ with model.json and version folders), one version folder
// (NAME/N/), or a single .onnx file. Its inputs and outputs come from the
// model itself, through the engine, so what the registry records is what
// an agent will load.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"
#include "engine/engine.h"
#include "store/model_artifact.h"
#include "store/model_pusher.h"

namespace perch::cli {

struct LocalModel {
  ModelMetadata metadata;
  std::vector<LocalModelFile> files;
  // The version folder's model.sig (a Sigstore bundle), when it has one:
  // pushed as a referrer of the model's manifest, not as one of its files.
  std::optional<std::filesystem::path> signature;
};

struct LocalModelOptions {
  std::string name;                // empty: the folder's name, or `default_name` for a file
  std::string default_name;        // for a single .onnx file
  std::optional<int64_t> version;  // a model folder: which version (default: the highest);
                                   // a file: its version (default 1)
};

// InvalidArgument / NotFound naming what is wrong with the path; the
// engine's error for a file that is not a model it can load.
Result<LocalModel> ReadLocalModel(const std::filesystem::path& path,
                                  const LocalModelOptions& options, Engine& engine);

}  // namespace perch::cli
