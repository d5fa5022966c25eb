// The model repository on disk:
//   REPO/<model>/<version>/model.onnx   version = positive integer
//   REPO/<model>/model.json             optional, see model_config.h
// Scanning reads names, sizes and times only; models are loaded elsewhere.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "models/model_config.h"

namespace perch {

// `[A-Za-z0-9_.-]{1,128}`, and neither "." nor "..": checked before a name
// ever reaches the filesystem.
bool IsValidModelName(std::string_view name);

// A positive decimal integer without sign or leading zeros; nullopt otherwise.
std::optional<int64_t> ParseModelVersion(std::string_view text);

struct VersionOnDisk {
  std::filesystem::path model_file;
  // Changes whenever a file of the version folder changes (name, size, time).
  std::string fingerprint;
  // Where the folder was pulled from, when a pull installed it (the folder's
  // .perch-artifact.json, see store/model_puller.h); empty otherwise.
  std::string artifact_reference;
  std::string artifact_digest;
};

struct ModelOnDisk {
  std::string name;
  Status config_status;  // why model.json is unusable, if it is
  ModelConfig config;
  std::string config_fingerprint;
  std::map<int64_t, VersionOnDisk> versions;  // every version folder with a model file
};

// Lists the models under `root`. Entries that are not model folders (bad
// names, files) are skipped; NotFound if `root` is not a directory.
Result<std::vector<ModelOnDisk>> ScanRepository(const std::filesystem::path& root);

// Scans one model folder. NotFound when it does not exist.
Result<ModelOnDisk> ScanModel(const std::filesystem::path& root, const std::string& name);

}  // namespace perch
