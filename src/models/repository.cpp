#include "models/repository.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

namespace perch {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kModelFile = "model.onnx";
constexpr std::string_view kConfigFile = "model.json";
constexpr uintmax_t kMaxConfigBytes = 1 << 20;
// Written by store/model_puller.cpp when it installs a pulled version.
constexpr std::string_view kArtifactRecordFile = ".perch-artifact.json";

std::string FingerprintOf(const fs::directory_entry& entry) {
  std::error_code error;
  const auto size = entry.is_regular_file(error) ? entry.file_size(error) : 0;
  const auto time = entry.last_write_time(error).time_since_epoch().count();
  return fmt::format("{}:{}:{};", entry.path().filename().string(), size, time);
}

// Every file of a version folder counts: external data changes the model too.
std::string FingerprintOfFolder(const fs::path& folder) {
  std::vector<std::string> parts;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(folder, error)) {
    parts.push_back(FingerprintOf(entry));
  }
  std::sort(parts.begin(), parts.end());
  std::string fingerprint;
  for (const auto& part : parts) {
    fingerprint += part;
  }
  return fingerprint;
}

void ReadConfig(const fs::path& folder, ModelOnDisk& model) {
  const fs::path file = folder / kConfigFile;
  std::error_code error;
  if (!fs::exists(file, error)) {
    return;
  }
  model.config_fingerprint = FingerprintOf(fs::directory_entry(file, error));
  if (fs::file_size(file, error) > kMaxConfigBytes) {
    model.config_status =
        InvalidArgument(fmt::format("{} is larger than {} bytes", file.string(), kMaxConfigBytes));
    return;
  }
  std::ifstream in(file);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto config = ParseModelConfig(text);
  if (!config.ok()) {
    model.config_status =
        InvalidArgument(fmt::format("{}: {}", file.string(), config.status().message()));
    return;
  }
  model.config = std::move(config).value();
}

// Fills in where a pulled version came from; leaves it empty for anything
// else (a hand-made folder, a record that does not parse).
void ReadArtifactRecord(const fs::path& folder, VersionOnDisk& version) {
  const fs::path file = folder / kArtifactRecordFile;
  std::error_code error;
  if (!fs::is_regular_file(file, error) || fs::file_size(file, error) > kMaxConfigBytes) {
    return;
  }
  std::ifstream in(file);
  const auto record = nlohmann::json::parse(in, nullptr, false);
  if (record.is_object()) {
    version.artifact_reference = record.value("reference", std::string());
    version.artifact_digest = record.value("digest", std::string());
  }
}

}  // namespace

bool IsValidModelName(std::string_view name) {
  if (name.empty() || name.size() > 128 || name == "." || name == "..") {
    return false;
  }
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
  });
}

std::optional<int64_t> ParseModelVersion(std::string_view text) {
  if (text.empty() || text.size() > 18 || text[0] == '0') {
    return std::nullopt;
  }
  int64_t version = 0;
  const auto [ptr, error] = std::from_chars(text.data(), text.data() + text.size(), version);
  if (error != std::errc() || ptr != text.data() + text.size() || version < 1) {
    return std::nullopt;
  }
  return version;
}

Result<ModelOnDisk> ScanModel(const fs::path& root, const std::string& name) {
  if (!IsValidModelName(name)) {
    return InvalidArgument(
        fmt::format("'{}' is not a valid model name ([A-Za-z0-9_.-], at most "
                    "128 characters)",
                    name));
  }
  const fs::path folder = root / name;
  std::error_code error;
  if (!fs::is_directory(folder, error)) {
    return NotFound(fmt::format("model '{}' is not in the repository", name));
  }
  ModelOnDisk model;
  model.name = name;
  ReadConfig(folder, model);
  for (const auto& entry : fs::directory_iterator(folder, error)) {
    const auto version = ParseModelVersion(entry.path().filename().string());
    if (!version || !entry.is_directory(error)) {
      continue;
    }
    // A pipeline's version folder holds no model file: its steps are in
    // model.json, which is what its version loads. A model with a runtime is
    // its own server: the version folder is the model.
    fs::path model_file = entry.path() / kModelFile;
    if (model.config.pipeline) {
      model_file = folder / kConfigFile;
    } else if (model.config.runtime) {
      model_file = entry.path();
    }
    if (!model.config.pipeline && !fs::exists(model_file, error)) {
      continue;
    }
    VersionOnDisk on_disk;
    on_disk.model_file = model_file;
    on_disk.fingerprint = FingerprintOfFolder(entry.path());
    ReadArtifactRecord(entry.path(), on_disk);
    model.versions[*version] = std::move(on_disk);
  }
  if (model.config.pipeline && model.versions.empty()) {
    // A pipeline needs no version folder: model.json alone is version 1.
    model.versions[1] = VersionOnDisk{.model_file = folder / kConfigFile,
                                      .fingerprint = model.config_fingerprint,
                                      .artifact_reference = {},
                                      .artifact_digest = {}};
  }
  return model;
}

Result<std::vector<ModelOnDisk>> ScanRepository(const fs::path& root) {
  std::error_code error;
  if (!fs::is_directory(root, error)) {
    return NotFound(fmt::format("model repository {} is not a directory", root.string()));
  }
  std::vector<ModelOnDisk> models;
  for (const auto& entry : fs::directory_iterator(root, error)) {
    const std::string name = entry.path().filename().string();
    if (!IsValidModelName(name) || !entry.is_directory(error)) {
      continue;
    }
    auto model = ScanModel(root, name);
    if (model.ok()) {
      models.push_back(std::move(model).value());
    }
  }
  std::sort(models.begin(), models.end(),
            [](const ModelOnDisk& a, const ModelOnDisk& b) { return a.name < b.name; });
  return models;
}

}  // namespace perch
