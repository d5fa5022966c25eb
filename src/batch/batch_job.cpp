#include "batch/batch_job.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>

#include "core/files.h"

namespace perch {

namespace fs = std::filesystem;

namespace {

constexpr const char* kModelFile = "_MODEL";
constexpr const char* kSuccessFile = "_SUCCESS";

Status PermissionDenied(std::string message) {
  return {StatusCode::kPermissionDenied, std::move(message)};
}
Status AlreadyExists(std::string message) {
  return {StatusCode::kAlreadyExists, std::move(message)};
}

Status CannotRead(const fs::path& path, const std::error_code& error) {
  if (error == std::errc::permission_denied) {
    return PermissionDenied(
        fmt::format("cannot read --input {}: {}", path.string(), error.message()));
  }
  return NotFound(fmt::format("cannot read --input {}: {}", path.string(), error.message()));
}

Status CheckReadable(const fs::path& path) {
  if (::access(path.c_str(), R_OK) != 0) {
    return CannotRead(path, std::error_code(errno, std::generic_category()));
  }
  return Status::Ok();
}

Status SyncPath(const fs::path& path, int flags) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0 || ::fsync(fd) != 0) {
    const int error = errno;
    if (fd >= 0) {
      ::close(fd);
    }
    return Internal(fmt::format("cannot sync {}: {}", path.string(), std::strerror(error)));
  }
  ::close(fd);
  return Status::Ok();
}

// The model a folder's _MODEL or _SUCCESS names, if it names one.
std::optional<ModelIdentity> RecordedModel(const fs::path& dir) {
  for (const char* file : {kModelFile, kSuccessFile}) {
    auto text = ReadFile(dir / file);
    if (!text.ok()) {
      continue;
    }
    auto json = nlohmann::json::parse(*text, nullptr, false);
    if (json.is_object() && json.contains("model")) {
      json = json["model"];
    }
    if (!json.is_object() || !json.contains("model_digest") || !json["model_digest"].is_string()) {
      continue;
    }
    ModelIdentity model;
    model.digest = json["model_digest"].get<std::string>();
    model.name = json.value("model_name", std::string());
    const std::string version = json.value("model_version", std::string());
    std::from_chars(version.data(), version.data() + version.size(), model.version);
    return model;
  }
  return std::nullopt;
}

nlohmann::json ModelJson(const ModelIdentity& model) {
  return {{"model_name", model.name},
          {"model_version", std::to_string(model.version)},
          {"model_digest", model.digest}};
}

}  // namespace

Result<std::vector<BatchInput>> ListBatchInputs(const std::vector<fs::path>& paths) {
  std::vector<BatchInput> inputs;
  for (const auto& path : paths) {
    std::error_code error;
    const auto status = fs::status(path, error);
    if (error) {
      return CannotRead(path, error);
    }
    PERCH_RETURN_IF_ERROR(CheckReadable(path));
    if (fs::is_regular_file(status)) {
      inputs.push_back({path, {}, path.filename().string(), fs::file_size(path, error)});
      continue;
    }
    if (!fs::is_directory(status)) {
      return InvalidArgument(
          fmt::format("--input {} is neither a file nor a folder", path.string()));
    }
    std::vector<fs::path> lines;
    BatchInput arrays{path, {}, "", 0};
    for (auto it = fs::directory_iterator(path, error); !error && it != fs::directory_iterator();
         it.increment(error)) {
      if (!it->is_regular_file(error)) {
        continue;
      }
      if (it->path().extension() == ".jsonl") {
        lines.push_back(it->path());
      } else if (it->path().extension() == ".npy") {
        arrays.arrays.push_back(it->path());
        arrays.bytes += it->file_size(error);
      }
    }
    if (error) {
      return CannotRead(path, error);
    }
    if (lines.empty() && arrays.arrays.empty()) {
      return InvalidArgument(
          fmt::format("--input {} holds no .jsonl and no .npy files", path.string()));
    }
    std::sort(lines.begin(), lines.end());
    for (const auto& file : lines) {
      PERCH_RETURN_IF_ERROR(CheckReadable(file));
      inputs.push_back({file, {}, file.filename().string(), fs::file_size(file, error)});
    }
    if (!arrays.arrays.empty()) {
      std::sort(arrays.arrays.begin(), arrays.arrays.end());
      const fs::path clean = path.filename().empty() ? path.parent_path() : path;
      arrays.output_name =
          fs::absolute(clean, error).lexically_normal().filename().string() + ".jsonl";
      inputs.push_back(std::move(arrays));
    }
  }
  std::map<std::string, fs::path> names;
  for (const auto& input : inputs) {
    if (input.output_name.empty() || input.output_name[0] == '_' || input.output_name[0] == '.') {
      return InvalidArgument(fmt::format(
          "--input {}: output names starting with '_' or '.' are the output folder's own; "
          "rename the file",
          input.path.string()));
    }
    if (const auto [it, added] = names.emplace(input.output_name, input.path); !added) {
      return InvalidArgument(fmt::format("--input {} and {} would both write {}; rename one",
                                         it->second.string(), input.path.string(),
                                         input.output_name));
    }
  }
  return inputs;
}

OutputFile::OutputFile(fs::path partial, fs::path final_path)
    : partial_(std::move(partial)),
      final_(std::move(final_path)),
      stream_(partial_, std::ios::binary | std::ios::trunc) {}

Status OutputFile::Commit() {
  stream_.flush();
  const bool written = static_cast<bool>(stream_);
  stream_.close();
  if (!written) {
    return ResourceExhausted(fmt::format("cannot write {} (disk full?)", partial_.string()));
  }
  PERCH_RETURN_IF_ERROR(SyncPath(partial_, O_RDONLY));
  std::error_code error;
  fs::rename(partial_, final_, error);
  if (error) {
    return Internal(fmt::format("cannot rename {} to {}: {}", partial_.string(), final_.string(),
                                error.message()));
  }
  return SyncPath(final_.parent_path(), O_RDONLY | O_DIRECTORY);
}

OutputFolder::OutputFolder(fs::path dir, ModelIdentity model)
    : dir_(std::move(dir)), model_(std::move(model)) {}

Result<std::unique_ptr<OutputFolder>> OutputFolder::Open(const fs::path& dir,
                                                         const ModelIdentity& model) {
  std::error_code error;
  fs::create_directories(dir, error);
  if (error || !fs::is_directory(dir)) {
    const std::string why = error ? error.message() : "not a folder";
    if (error == std::errc::permission_denied) {
      return PermissionDenied(fmt::format("cannot create --output {}: {}", dir.string(), why));
    }
    return InvalidArgument(fmt::format("cannot create --output {}: {}", dir.string(), why));
  }
  if (const auto recorded = RecordedModel(dir); recorded && recorded->digest != model.digest) {
    return AlreadyExists(fmt::format(
        "--output {} holds the results of model '{}' version {} ({}), not of '{}' version {} "
        "({}): give another --output, or empty it",
        dir.string(), recorded->name, recorded->version, recorded->digest, model.name,
        model.version, model.digest));
  }
  if (::access(dir.c_str(), W_OK) != 0) {
    return PermissionDenied(
        fmt::format("cannot write to --output {}: {}", dir.string(), std::strerror(errno)));
  }
  PERCH_RETURN_IF_ERROR(WriteFileAtomically(dir / kModelFile, ModelJson(model).dump() + "\n"));
  fs::remove(dir / kSuccessFile, error);
  if (error) {
    return Internal(
        fmt::format("cannot remove {}: {}", (dir / kSuccessFile).string(), error.message()));
  }
  return std::unique_ptr<OutputFolder>(new OutputFolder(dir, model));
}

Result<BatchCounts> OutputFolder::Finished(const std::string& name) const {
  const fs::path path = dir_ / name;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return NotFound(fmt::format("{} is not finished", path.string()));
  }
  BatchCounts counts;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) {
      ++counts.records;
      counts.errors += BatchRunner::IsErrorRecord(line) ? 1 : 0;
    }
  }
  if (in.bad()) {
    return Internal(fmt::format("cannot read {}", path.string()));
  }
  return counts;
}

Result<std::unique_ptr<OutputFile>> OutputFolder::Begin(const std::string& name) const {
  auto file = std::make_unique<OutputFile>(dir_ / ("." + name + ".partial"), dir_ / name);
  if (!file->stream()) {
    return Internal(fmt::format("cannot create {}: {}", (dir_ / ("." + name + ".partial")).string(),
                                std::strerror(errno)));
  }
  return file;
}

Status OutputFolder::WriteSuccess(const std::vector<FileSummary>& files, double seconds) const {
  nlohmann::json list = nlohmann::json::array();
  BatchCounts total;
  for (const auto& file : files) {
    list.push_back({{"input", file.input},
                    {"output", file.output},
                    {"records", file.counts.records},
                    {"errors", file.counts.errors},
                    {"skipped", file.skipped}});
    total.records += file.counts.records;
    total.errors += file.counts.errors;
  }
  const nlohmann::json summary{{"model", ModelJson(model_)},
                               {"files", list},
                               {"records", total.records},
                               {"errors", total.errors},
                               {"seconds", seconds}};
  return WriteFileAtomically(dir_ / kSuccessFile, summary.dump(2) + "\n");
}

}  // namespace perch
