#include "models/model_manager.h"

#include <fmt/format.h>

#include <algorithm>

#include "core/enum_names.h"

namespace perch {
namespace {

constexpr EnumNames<ModelState, 3> kStateNames{{
    {ModelState::kLoading, "LOADING"},
    {ModelState::kReady, "READY"},
    {ModelState::kUnavailable, "UNAVAILABLE"},
}};

// Zero-filled inputs for warmup; dynamic dims take size 1.
std::vector<Tensor> WarmupInputs(const ModelSignature& signature) {
  std::vector<Tensor> inputs;
  for (const auto& spec : signature.inputs) {
    Tensor tensor{.name = spec.name, .datatype = spec.datatype, .shape = spec.shape, .data = {}};
    int64_t count = 1;
    for (auto& dim : tensor.shape) {
      dim = dim < 0 ? 1 : dim;
      count *= dim;
    }
    if (spec.datatype == DataType::kBytes) {
      for (int64_t i = 0; i < count; ++i) {
        AppendBytesElement(tensor.data, "");
      }
    } else {
      tensor.data.assign(static_cast<size_t>(count) * ElementSize(spec.datatype), '\0');
    }
    inputs.push_back(std::move(tensor));
  }
  return inputs;
}

std::vector<std::string> OutputNames(const ModelSignature& signature) {
  std::vector<std::string> names;
  for (const auto& spec : signature.outputs) {
    names.push_back(spec.name);
  }
  return names;
}

}  // namespace

std::string_view ToString(ModelState state) { return EnumToString(kStateNames, state); }

std::optional<ModelState> ModelStateFromString(std::string_view name) {
  return EnumFromString(kStateNames, name);
}

LoadedModel::LoadedModel(std::string name, int64_t version, ModelConfig config,
                         ModelSignature signature, std::unique_ptr<Session> session,
                         MetricsRegistry& metrics, std::string artifact_digest)
    : requests(metrics.GetCounter("perch_inference_requests_total",
                                  "Inference requests received, successful or not",
                                  {{"model", name}, {"version", std::to_string(version)}})),
      failures(metrics.GetCounter("perch_inference_failures_total",
                                  "Inference requests that failed",
                                  {{"model", name}, {"version", std::to_string(version)}})),
      queue_seconds(metrics.GetHistogram(
          "perch_inference_queue_duration_seconds", "Time a request waited in its model's queue",
          {{"model", name}, {"version", std::to_string(version)}}, LatencyBucketsSeconds())),
      compute_seconds(metrics.GetHistogram(
          "perch_inference_compute_duration_seconds", "Time the engine spent on a request",
          {{"model", name}, {"version", std::to_string(version)}}, LatencyBucketsSeconds())),
      batch_size(metrics.GetHistogram(
          "perch_inference_batch_size", "Requests run together in one engine call",
          {{"model", name}, {"version", std::to_string(version)}}, {1, 2, 4, 8, 16, 32, 64, 128})),
      name_(std::move(name)),
      version_(version),
      config_(std::move(config)),
      signature_(std::move(signature)),
      session_(std::move(session)),
      artifact_digest_(std::move(artifact_digest)) {}

ModelManager::ModelManager(ModelManagerOptions options, Engine& engine, MetricsRegistry& metrics,
                           Logger logger)
    : options_(std::move(options)),
      engine_(engine),
      metrics_(metrics),
      logger_(std::move(logger)),
      repository_(options_.repository) {}

ModelManager::~ModelManager() { Stop(); }

Status ModelManager::Start() {
  {
    MutexLock reconcile(reconcile_mutex_);
    PERCH_RETURN_IF_ERROR(ScanRepository(repository_).status());
    Reconcile();
  }
  {
    MutexLock lock(mutex_);
    ready_ = true;
  }
  if (options_.poll_interval.count() > 0) {
    poller_ = std::jthread([this](const std::stop_token& stop) { PollLoop(stop); });
  }
  return Status::Ok();
}

void ModelManager::Stop() {
  if (poller_.joinable()) {
    poller_.request_stop();
    poll_wakeup_.notify_all();
    poller_.join();
  }
}

bool ModelManager::Ready() const {
  MutexLock lock(mutex_);
  return ready_;
}

void ModelManager::PollLoop(const std::stop_token& stop) {
  while (!stop.stop_requested()) {
    {
      std::unique_lock lock(poll_mutex_);
      poll_wakeup_.wait_for(lock, stop, options_.poll_interval, [] { return false; });
    }
    if (stop.stop_requested()) {
      return;
    }
    MutexLock reconcile(reconcile_mutex_);
    Reconcile();
  }
}

void ModelManager::Reconcile() {
  auto scan = ScanRepository(repository_);
  if (!scan.ok()) {
    // A repository that vanished (an unmounted disk) must not take models
    // down with it: keep serving what is loaded until it is back.
    logger_.Error("{}; keeping the loaded models", scan.status().message());
    return;
  }
  std::set<std::string, std::less<>> on_disk;
  for (const auto& model : *scan) {
    on_disk.insert(model.name);
    {
      MutexLock lock(mutex_);
      if (unloaded_.contains(model.name)) {
        continue;
      }
    }
    (void)ReconcileModel(model, /*force=*/false);
  }
  MutexLock lock(mutex_);
  for (auto it = models_.begin(); it != models_.end();) {
    if (on_disk.contains(it->first)) {
      ++it;
      continue;
    }
    logger_.Info("model '{}' was removed from the repository; unloading it", it->first);
    it = models_.erase(it);
  }
  std::erase_if(unloaded_, [&](const std::string& name) { return !on_disk.contains(name); });
}

Status ModelManager::ReconcileModel(const ModelOnDisk& disk, bool force) {
  ModelEntry current;
  {
    MutexLock lock(mutex_);
    current = models_[disk.name];
  }
  if (!disk.config_status.ok()) {
    const bool serving = std::any_of(current.versions.begin(), current.versions.end(),
                                     [](const auto& v) { return v.second.model != nullptr; });
    if (current.config_fingerprint != disk.config_fingerprint || force) {
      logger_.Error("model '{}': {}{}", disk.name, disk.config_status.message(),
                    serving ? "; the loaded versions keep serving" : "");
    }
    MutexLock lock(mutex_);
    auto& entry = models_[disk.name];
    entry.reason = disk.config_status.message();
    entry.config_fingerprint = disk.config_fingerprint;
    return disk.config_status;
  }

  std::vector<int64_t> available;
  for (const auto& [version, ignored] : disk.versions) {
    available.push_back(version);
  }
  const std::vector<int64_t> desired = disk.config.version_policy.Select(available);
  const bool config_changed = current.config_fingerprint != disk.config_fingerprint;

  ModelEntry next;
  next.config_fingerprint = disk.config_fingerprint;
  if (desired.empty()) {
    next.reason = available.empty()
                      ? "no version folder holds a model.onnx"
                      : "the version policy of model.json selects none of the versions on disk";
  }
  Status result = Status::Ok();
  bool attempted_load = false;
  for (const int64_t version : desired) {
    const VersionOnDisk& on_disk = disk.versions.at(version);
    const auto old = current.versions.find(version);
    const bool unchanged = old != current.versions.end() &&
                           old->second.fingerprint == on_disk.fingerprint && !config_changed;
    if (unchanged && !force) {
      next.versions[version] = old->second;
      continue;
    }
    attempted_load = true;
    auto loaded = LoadVersion(disk, version, repository_);
    VersionSlot slot;
    slot.fingerprint = on_disk.fingerprint;
    if (loaded.ok()) {
      slot.model = std::move(loaded).value();
      slot.state = ModelState::kReady;
      slot.artifact_reference = on_disk.artifact_reference;
      slot.artifact_digest = slot.model->artifact_digest();
      logger_.Info("model '{}' version {} is ready", disk.name, version);
    } else if (old != current.versions.end() && old->second.model) {
      slot = old->second;
      slot.fingerprint = on_disk.fingerprint;  // do not retry this copy on every poll
      slot.reason = fmt::format("a newer copy failed to load, the previous one keeps serving: {}",
                                loaded.status().message());
      logger_.Error("model '{}' version {}: {}", disk.name, version, slot.reason);
      result = loaded.status();
    } else {
      slot.state = ModelState::kUnavailable;
      slot.reason = loaded.status().message();
      logger_.Error("model '{}' version {} failed to load: {}", disk.name, version, slot.reason);
      result = loaded.status();
    }
    next.versions[version] = std::move(slot);
  }
  // A selected version that may not serve (it failed to load, or the trust
  // policy refused it) does not push out the one serving: the newest version
  // that was ready keeps serving until a selected one is.
  const bool none_ready = std::none_of(next.versions.begin(), next.versions.end(),
                                       [](const auto& v) { return v.second.model != nullptr; });
  if (none_ready && !desired.empty()) {
    for (auto it = current.versions.rbegin(); it != current.versions.rend(); ++it) {
      if (it->second.model && !next.versions.contains(it->first)) {
        if (attempted_load) {
          logger_.Warn("model '{}' version {} keeps serving: no selected version is ready",
                       disk.name, it->first);
        }
        next.versions[it->first] = it->second;
        break;
      }
    }
  }
  for (const auto& [version, slot] : current.versions) {
    if (!next.versions.contains(version) && slot.model) {
      logger_.Info("model '{}' version {} is no longer selected; unloading it", disk.name, version);
    }
  }
  MutexLock lock(mutex_);
  if (!unloaded_.contains(disk.name)) {
    models_[disk.name] = std::move(next);
  }
  return result;
}

Result<std::shared_ptr<LoadedModel>> ModelManager::LoadVersion(
    const ModelOnDisk& disk, int64_t version, const std::filesystem::path& repository,
    int min_warmup_runs) {
  const VersionOnDisk& on_disk = disk.versions.at(version);
  std::string artifact_digest = on_disk.artifact_digest;
  if (options_.check_version) {
    PERCH_ASSIGN_OR_RETURN(
        artifact_digest,
        options_.check_version(disk.name, repository / disk.name / std::to_string(version),
                               on_disk.artifact_digest));
  }
  PERCH_ASSIGN_OR_RETURN(
      auto session,
      engine_.Load(on_disk.model_file, repository,
                   SessionOptions{.intra_op_threads = disk.config.threads,
                                  .execution_providers = disk.config.execution_providers}));
  PERCH_ASSIGN_OR_RETURN(auto signature, ApplyOverrides(session->Signature(), disk.config));
  const int warmup_runs = std::max(disk.config.warmup_runs, min_warmup_runs);
  if (warmup_runs > 0) {
    const auto inputs = WarmupInputs(signature);
    const auto outputs = OutputNames(signature);
    for (int run = 0; run < warmup_runs; ++run) {
      const auto result = session->Run(inputs, outputs);
      if (!result.ok()) {
        return InvalidArgument(fmt::format("warmup failed: {}", result.status().message()));
      }
    }
  }
  return std::make_shared<LoadedModel>(disk.name, version, disk.config, std::move(signature),
                                       std::move(session), metrics_, std::move(artifact_digest));
}

Result<std::shared_ptr<LoadedModel>> ModelManager::Acquire(std::string_view name,
                                                           std::string_view version) const {
  if (!IsValidModelName(name)) {
    return InvalidArgument(fmt::format("'{}' is not a valid model name", name));
  }
  std::optional<int64_t> wanted;
  if (!version.empty()) {
    wanted = ParseModelVersion(version);
    if (!wanted) {
      return InvalidArgument(fmt::format("model version '{}' is not a positive integer", version));
    }
  }
  MutexLock lock(mutex_);
  if (unloaded_.contains(name)) {
    return Unavailable(
        fmt::format("model '{}' is unloaded; load it through the repository API", name));
  }
  const auto model = models_.find(name);
  if (model == models_.end()) {
    return NotFound(fmt::format("model '{}' is not in the repository", name));
  }
  const auto& versions = model->second.versions;
  if (wanted) {
    const auto slot = versions.find(*wanted);
    if (slot == versions.end()) {
      return NotFound(fmt::format("model '{}' has no version {}", name, *wanted));
    }
    if (!slot->second.model) {
      return Unavailable(fmt::format("model '{}' version {} is not ready: {}", name, *wanted,
                                     slot->second.reason));
    }
    return slot->second.model;
  }
  for (auto it = versions.rbegin(); it != versions.rend(); ++it) {
    if (it->second.model) {
      return it->second.model;
    }
  }
  const std::string reason = !model->second.reason.empty() ? model->second.reason
                             : versions.empty()            ? "it has no versions"
                                                           : versions.rbegin()->second.reason;
  return Unavailable(fmt::format("model '{}' is not ready: {}", name, reason));
}

std::vector<std::shared_ptr<LoadedModel>> ModelManager::ServedModels() const {
  std::vector<std::shared_ptr<LoadedModel>> served;
  MutexLock lock(mutex_);
  for (const auto& [name, entry] : models_) {
    for (auto it = entry.versions.rbegin(); it != entry.versions.rend(); ++it) {
      if (it->second.model) {
        served.push_back(it->second.model);
        break;
      }
    }
  }
  return served;
}

std::vector<int64_t> ModelManager::ReadyVersions(std::string_view name) const {
  std::vector<int64_t> ready;
  MutexLock lock(mutex_);
  const auto model = models_.find(name);
  if (model == models_.end() || unloaded_.contains(name)) {
    return ready;
  }
  for (const auto& [version, slot] : model->second.versions) {
    if (slot.model) {
      ready.push_back(version);
    }
  }
  return ready;
}

std::vector<VersionStatus> ModelManager::Index() const {
  std::vector<VersionStatus> index;
  MutexLock lock(mutex_);
  for (const auto& [name, entry] : models_) {
    if (entry.versions.empty()) {
      index.push_back({name, std::nullopt, ModelState::kUnavailable, entry.reason, "", ""});
    }
    for (const auto& [version, slot] : entry.versions) {
      const ModelState state = slot.model ? ModelState::kReady : slot.state;
      std::string reason = slot.reason;
      if (!entry.reason.empty()) {
        reason = reason.empty() ? entry.reason : fmt::format("{}; {}", entry.reason, reason);
      }
      index.push_back(
          {name, version, state, std::move(reason), slot.artifact_reference, slot.artifact_digest});
    }
  }
  for (const auto& name : unloaded_) {
    index.push_back({name, std::nullopt, ModelState::kUnavailable, "unloaded", "", ""});
  }
  std::sort(index.begin(), index.end(), [](const VersionStatus& a, const VersionStatus& b) {
    return std::tie(a.model, a.version) < std::tie(b.model, b.version);
  });
  return index;
}

Status ModelManager::LoadModel(const std::string& name) {
  MutexLock reconcile(reconcile_mutex_);
  PERCH_ASSIGN_OR_RETURN(const ModelOnDisk disk, ScanModel(repository_, name));
  {
    MutexLock lock(mutex_);
    unloaded_.erase(name);
  }
  PERCH_RETURN_IF_ERROR(ReconcileModel(disk, /*force=*/true));
  if (ReadyVersions(name).empty()) {
    MutexLock lock(mutex_);
    return Unavailable(
        fmt::format("model '{}' has nothing to serve: {}", name, models_[name].reason));
  }
  return Status::Ok();
}

Status ModelManager::UnloadModel(const std::string& name) {
  MutexLock reconcile(reconcile_mutex_);
  if (!IsValidModelName(name)) {
    return InvalidArgument(fmt::format("'{}' is not a valid model name", name));
  }
  MutexLock lock(mutex_);
  if (!models_.contains(name) && !unloaded_.contains(name)) {
    return NotFound(fmt::format("model '{}' is not in the repository", name));
  }
  models_.erase(name);
  unloaded_.insert(name);
  logger_.Info("model '{}' unloaded on request", name);
  return Status::Ok();
}

std::filesystem::path ModelManager::repository() const {
  MutexLock lock(mutex_);
  return repository_;
}

Status ModelManager::SwitchRepository(const std::filesystem::path& repository,
                                      int min_warmup_runs) {
  MutexLock reconcile(reconcile_mutex_);
  PERCH_ASSIGN_OR_RETURN(const auto scan, ScanRepository(repository));
  std::map<std::string, ModelEntry, std::less<>> current;
  {
    MutexLock lock(mutex_);
    current = models_;
  }
  std::map<std::string, ModelEntry, std::less<>> next;
  for (const ModelOnDisk& disk : scan) {
    if (!disk.config_status.ok()) {
      return InvalidArgument(
          fmt::format("model '{}': {}", disk.name, disk.config_status.message()));
    }
    std::vector<int64_t> available;
    for (const auto& [version, ignored] : disk.versions) {
      available.push_back(version);
    }
    const std::vector<int64_t> desired = disk.config.version_policy.Select(available);
    if (desired.empty()) {
      return InvalidArgument(fmt::format("model '{}' has no version to serve", disk.name));
    }
    const ModelEntry* old_entry = current.contains(disk.name) ? &current.at(disk.name) : nullptr;
    ModelEntry& entry = next[disk.name];
    entry.config_fingerprint = disk.config_fingerprint;
    for (const int64_t version : desired) {
      const VersionOnDisk& on_disk = disk.versions.at(version);
      if (old_entry != nullptr && old_entry->config_fingerprint == disk.config_fingerprint) {
        const auto old = old_entry->versions.find(version);
        if (old != old_entry->versions.end() && old->second.model &&
            old->second.fingerprint == on_disk.fingerprint) {
          entry.versions[version] = old->second;
          continue;
        }
      }
      auto loaded = LoadVersion(disk, version, repository, min_warmup_runs);
      if (!loaded.ok()) {
        return Status(loaded.status().code(),
                      fmt::format("model '{}' version {} failed to load: {}", disk.name, version,
                                  loaded.status().message()));
      }
      std::shared_ptr<LoadedModel> model = std::move(loaded).value();
      std::string digest = model->artifact_digest();
      entry.versions[version] = VersionSlot{.fingerprint = on_disk.fingerprint,
                                            .model = std::move(model),
                                            .state = ModelState::kReady,
                                            .reason = {},
                                            .artifact_reference = on_disk.artifact_reference,
                                            .artifact_digest = std::move(digest)};
    }
  }
  MutexLock lock(mutex_);
  for (const auto& [name, entry] : next) {
    for (const auto& [version, slot] : entry.versions) {
      logger_.Info("model '{}' version {} is ready", name, version);
    }
  }
  models_ = std::move(next);
  unloaded_.clear();
  repository_ = repository;
  logger_.Info("now serving {}", repository.string());
  return Status::Ok();
}

}  // namespace perch
