#include "models/model_manager.h"

#include <fmt/format.h>
#include <malloc.h>

#include <algorithm>

#include "core/enum_names.h"
#include "models/memory_budget.h"

namespace perch {
namespace {

constexpr EnumNames<ModelState, 3> kStateNames{{
    {ModelState::kLoading, "LOADING"},
    {ModelState::kReady, "READY"},
    {ModelState::kUnavailable, "UNAVAILABLE"},
}};

// Zero-filled warm-up inputs: the shapes model.json gives, or the model's
// with dynamic dims as 1 (`guessed`: a failure then says how to give them).
struct WarmupInputs {
  std::vector<Tensor> tensors;
  bool guessed = false;
};

Result<WarmupInputs> MakeWarmupInputs(const ModelSignature& signature, const ModelConfig& config) {
  WarmupInputs warmup;
  for (const auto& given : config.warmup_shapes) {
    const std::string& name = given.first;
    if (std::none_of(signature.inputs.begin(), signature.inputs.end(),
                     [&](const TensorSpec& spec) { return spec.name == name; })) {
      return InvalidArgument(fmt::format(
          "model.json \"warmup\".\"shapes\" names '{}', which is not an input of the model", name));
    }
  }
  for (const auto& spec : signature.inputs) {
    Tensor tensor{.name = spec.name, .datatype = spec.datatype, .shape = spec.shape, .data = {}};
    if (auto given = config.warmup_shapes.find(spec.name); given != config.warmup_shapes.end()) {
      if (!ShapeFits(spec.shape, given->second)) {
        return InvalidArgument(
            fmt::format("model.json \"warmup\".\"shapes\" gives '{}' the shape {}, which does "
                        "not fit the model's {}",
                        spec.name, ShapeToString(given->second), ShapeToString(spec.shape)));
      }
      tensor.shape = given->second;
    }
    int64_t count = 1;
    for (auto& dim : tensor.shape) {
      if (dim < 0) {
        dim = 1;
        warmup.guessed = true;
      }
      count *= dim;
    }
    if (spec.datatype == DataType::kBytes) {
      for (int64_t i = 0; i < count; ++i) {
        AppendBytesElement(tensor.data, "");
      }
    } else {
      tensor.data.assign(static_cast<size_t>(count) * ElementSize(spec.datatype), '\0');
    }
    warmup.tensors.push_back(std::move(tensor));
  }
  return warmup;
}

constexpr int64_t kMiB = int64_t{1} << 20;
// What an ONNX Runtime session costs beside its weights (graph, kernels,
// planner), charged to every version; measured with bench/memory.
constexpr int64_t kModelOverheadBytes = kMiB;

// MiB, rounded up, for messages.
int64_t ToMiB(int64_t bytes) { return (bytes + kMiB - 1) / kMiB; }

// What a version out of memory says in the index and to a request.
constexpr std::string_view kDeferredReason =
    "not in memory (--memory-limit): loads on its next request";

// A request's model name checked and its version parsed (none: the newest).
Result<std::optional<int64_t>> WantedVersion(std::string_view name, std::string_view version) {
  if (!IsValidModelName(name)) {
    return InvalidArgument(fmt::format("'{}' is not a valid model name", name));
  }
  if (version.empty()) {
    return std::optional<int64_t>{};
  }
  const std::optional<int64_t> wanted = ParseModelVersion(version);
  if (!wanted) {
    return InvalidArgument(fmt::format("model version '{}' is not a positive integer", version));
  }
  return wanted;
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
      pending(metrics.GetGauge("perch_inference_pending_requests",
                               "Requests waiting in the model's queue for a worker",
                               {{"model", name}, {"version", std::to_string(version)}})),
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
      repository_(options_.repository),
      budget_hits_(metrics.GetCounter(
          "perch_model_memory_hits_total",
          "Requests that found their model version in memory (with --memory-limit)", {})),
      budget_misses_(metrics.GetCounter(
          "perch_model_memory_misses_total",
          "Requests that had to wait for their model version to load (with --memory-limit)", {})),
      budget_evictions_(
          metrics.GetCounter("perch_model_memory_unloads_total",
                             "Idle model versions unloaded to stay within --memory-limit", {})),
      load_seconds_(metrics.GetHistogram("perch_model_load_on_demand_duration_seconds",
                                         "Time a model version took to load on demand", {},
                                         LatencyBucketsSeconds())) {}

ModelManager::~ModelManager() { Stop(); }

Status ModelManager::Start() {
  if (Budgeted()) {
    // What the process holds before any model (the engine) is not the
    // models' to use. The servers may still be starting: what they add
    // meanwhile is charged to the first loads, on the safe side.
    const int64_t base = ResidentBytes();
    models_budget_ = options_.memory_limit_bytes - base;
    if (models_budget_ <= 0) {
      return InvalidArgument(fmt::format(
          "--memory-limit {} MiB is below what perch holds with no model loaded ({} MiB); "
          "raise it",
          ToMiB(options_.memory_limit_bytes), ToMiB(base)));
    }
    logger_.Info("memory budget: {} MiB, {} MiB of it for models",
                 ToMiB(options_.memory_limit_bytes), ToMiB(models_budget_));
    loader_ = std::jthread([this] { LoaderLoop(); });
  }
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
  {
    MutexLock lock(mutex_);
    stopping_ = true;
  }
  load_wakeup_.notify_all();
  load_done_.notify_all();
  if (loader_.joinable()) {
    loader_.join();
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
  // Pipelines after the models they chain, so their steps are there to check.
  std::stable_partition(scan->begin(), scan->end(),
                        [](const ModelOnDisk& model) { return !model.config.pipeline; });
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
    const int64_t estimate = EstimateCost(on_disk);
    if (Budgeted() && !MakeRoom(estimate, /*evict=*/force)) {
      // No room without unloading what is in use: the first request loads it.
      VersionSlot slot{.fingerprint = on_disk.fingerprint,
                       .model = nullptr,
                       .state = ModelState::kUnavailable,
                       .reason = std::string(kDeferredReason),
                       .artifact_reference = on_disk.artifact_reference,
                       .artifact_digest = {},
                       .memory_cost = 0,
                       .deferred = true};
      logger_.Info("model '{}' version {} waits for its first request: the memory budget is full",
                   disk.name, version);
      next.versions[version] = std::move(slot);
      continue;
    }
    attempted_load = true;
    int64_t cost = 0;
    auto loaded = LoadMeasured(disk, version, repository_, 0, estimate, cost);
    VersionSlot slot;
    slot.fingerprint = on_disk.fingerprint;
    if (loaded.ok()) {
      slot.model = std::move(loaded).value();
      slot.model->MarkUsed(++use_clock_);
      slot.memory_cost = cost;
      pending_charge_ += cost;
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
  next.disk = std::make_shared<const ModelOnDisk>(disk);
  {
    MutexLock lock(mutex_);
    if (!unloaded_.contains(disk.name)) {
      models_[disk.name] = std::move(next);
    }
    pending_charge_ = 0;
  }
  if (Budgeted() && attempted_load) {
    (void)MakeRoom(0, /*evict=*/true);  // the loads may have cost more than estimated
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
  std::unique_ptr<Session> session;
  if (disk.config.pipeline) {
    if (!options_.load_pipeline) {
      return InvalidArgument("this command does not serve pipelines");
    }
    PERCH_ASSIGN_OR_RETURN(session, options_.load_pipeline(*this, disk, version));
  } else {
    PERCH_ASSIGN_OR_RETURN(
        session,
        engine_.Load(on_disk.model_file, repository,
                     SessionOptions{.intra_op_threads = disk.config.threads,
                                    .runtime = disk.config.runtime,
                                    .model_name = disk.name,
                                    .model_version = version,
                                    .execution_providers = disk.config.execution_providers}));
  }
  PERCH_ASSIGN_OR_RETURN(auto signature, ApplyOverrides(session->Signature(), disk.config));
  const int warmup_runs = std::max(disk.config.warmup_runs, min_warmup_runs);
  if (warmup_runs > 0) {
    PERCH_ASSIGN_OR_RETURN(const auto inputs, MakeWarmupInputs(signature, disk.config));
    const auto outputs = OutputNames(signature);
    for (int run = 0; run < warmup_runs; ++run) {
      const auto result = session->Run(inputs.tensors, outputs);
      if (!result.ok()) {
        return InvalidArgument(fmt::format(
            "warmup failed: {}{}", result.status().message(),
            inputs.guessed ? "; the warm-up inputs had their dynamic dims as 1: if the model "
                             "needs other sizes, give them in model.json's \"warmup\": "
                             "{\"shapes\": {\"INPUT\": [...]}}"
                           : ""));
      }
    }
  }
  return std::make_shared<LoadedModel>(disk.name, version, disk.config, std::move(signature),
                                       std::move(session), metrics_, std::move(artifact_digest));
}

Result<std::shared_ptr<LoadedModel>> ModelManager::Acquire(std::string_view name,
                                                           std::string_view version) const {
  return Acquire(name, version, std::nullopt);
}

Result<std::shared_ptr<LoadedModel>> ModelManager::Acquire(
    std::string_view name, std::string_view version,
    std::optional<std::chrono::steady_clock::time_point> deadline) const {
  PERCH_ASSIGN_OR_RETURN(const std::optional<int64_t> wanted, WantedVersion(name, version));
  MutexLock lock(mutex_);
  // A version unloaded again before its waiter could take it loads again,
  // a few times at most: past that the budget is too small for the load.
  constexpr int kAttempts = 3;
  for (int attempt = 0;; ++attempt) {
    std::optional<int64_t> load;
    auto found = Find(name, wanted, load);
    if (!load) {
      if (found.ok()) {
        (*found)->MarkUsed(++use_clock_);
        if (Budgeted() && attempt == 0) {
          budget_hits_.Increment();
        }
      }
      return found;
    }
    if (attempt == kAttempts) {
      return Unavailable(fmt::format(
          "model '{}' version {} was unloaded again before it could serve: --memory-limit is "
          "too small for the models in use; retry later",
          name, *load));
    }
    if (attempt == 0) {
      budget_misses_.Increment();
    }
    const VersionKey key{std::string(name), *load};
    OnDemand& pending = on_demand_[key];
    const uint64_t generation = pending.generation;
    if (!pending.queued) {
      pending.queued = true;
      load_queue_.push_back(key);
      load_wakeup_.notify_one();
    }
    while (pending.generation == generation) {
      if (stopping_) {
        return Unavailable("perch is shutting down");
      }
      if (!deadline) {
        lock.Wait(load_done_);
      } else if (!lock.WaitUntil(load_done_, *deadline) && pending.generation == generation) {
        return Status(StatusCode::kDeadlineExceeded,
                      fmt::format("model '{}' version {} was still loading at the request's "
                                  "deadline; it keeps loading, retry",
                                  name, *load));
      }
    }
    if (!pending.result.ok()) {
      return pending.result;
    }
  }
}

Status ModelManager::Lookup(std::string_view name, std::string_view version) const {
  PERCH_ASSIGN_OR_RETURN(const std::optional<int64_t> wanted, WantedVersion(name, version));
  MutexLock lock(mutex_);
  std::optional<int64_t> load;
  const auto found = Find(name, wanted, load);
  return found.ok() || load ? Status::Ok() : found.status();
}

std::shared_ptr<LoadedModel> ModelManager::Resident(std::string_view name,
                                                    std::string_view version) const {
  const auto wanted = WantedVersion(name, version);
  if (!wanted.ok()) {
    return nullptr;
  }
  MutexLock lock(mutex_);
  std::optional<int64_t> load;
  auto found = Find(name, *wanted, load);
  return found.ok() ? std::move(found).value() : nullptr;
}

Result<std::shared_ptr<LoadedModel>> ModelManager::Find(std::string_view name,
                                                        std::optional<int64_t> wanted,
                                                        std::optional<int64_t>& load) const {
  load.reset();
  if (unloaded_.contains(name)) {
    return Unavailable(
        fmt::format("model '{}' is unloaded; load it through the repository API", name));
  }
  const auto& table =
      staged_ != nullptr && staging_thread_ == std::this_thread::get_id() ? *staged_ : models_;
  const auto model = table.find(name);
  if (model == table.end()) {
    return NotFound(fmt::format("model '{}' is not in the repository", name));
  }
  const auto& versions = model->second.versions;
  if (wanted) {
    const auto slot = versions.find(*wanted);
    if (slot == versions.end()) {
      return NotFound(fmt::format("model '{}' has no version {}", name, *wanted));
    }
    if (slot->second.model) {
      return slot->second.model;
    }
    if (slot->second.deferred) {
      load = *wanted;
    }
    return Unavailable(
        fmt::format("model '{}' version {} is not ready: {}", name, *wanted, slot->second.reason));
  }
  for (auto it = versions.rbegin(); it != versions.rend(); ++it) {
    if (it->second.model) {
      return it->second.model;
    }
    if (it->second.deferred) {
      load = it->first;
      return Unavailable(fmt::format("model '{}' is not ready: {}", name, it->second.reason));
    }
  }
  const std::string reason = !model->second.reason.empty() ? model->second.reason
                             : versions.empty()            ? "it has no versions"
                                                           : versions.rbegin()->second.reason;
  return Unavailable(fmt::format("model '{}' is not ready: {}", name, reason));
}

int64_t ModelManager::EstimateCost(const VersionOnDisk& version) {
  std::error_code error;
  int64_t bytes = 0;
  for (const auto& file :
       std::filesystem::directory_iterator(version.model_file.parent_path(), error)) {
    const auto size = file.is_regular_file(error) ? file.file_size(error) : 0;
    bytes += error ? 0 : static_cast<int64_t>(size);
  }
  // At its peak a load holds the file's bytes, their parse and ONNX
  // Runtime's copy of the weights at once; see docs/model-repository.md.
  return 3 * bytes + kModelOverheadBytes;
}

Result<std::shared_ptr<LoadedModel>> ModelManager::LoadMeasured(
    const ModelOnDisk& disk, int64_t version, const std::filesystem::path& repository,
    int min_warmup_runs, int64_t estimate, int64_t& cost) {
  const int64_t before = ResidentBytes();
  const auto started = std::chrono::steady_clock::now();
  auto loaded = LoadVersion(disk, version, repository, min_warmup_runs);
  if (Budgeted()) {
    malloc_trim(0);  // what the load only passed through (the file's bytes) is not its cost
  }
  // Loads run one at a time (under reconcile_mutex_), so the growth is this
  // load's, give or take what requests allocated meanwhile. Memory the
  // allocator reuses from an earlier unload shows no growth, hence a floor:
  // the weights are held at least once (a third of the load's estimate).
  cost = std::max(ResidentBytes() - before, estimate / 3);
  if (loaded.ok() && Budgeted()) {
    load_seconds_.Observe(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  }
  return loaded;
}

bool ModelManager::MakeRoom(int64_t cost, bool evict) {
  std::vector<std::shared_ptr<LoadedModel>> freed;  // destroyed once the lock is released
  {
    MutexLock lock(mutex_);
    int64_t charged = pending_charge_;
    std::vector<VersionSlot*> idle;
    for (auto& [name, entry] : models_) {
      for (auto& [version, slot] : entry.versions) {
        if (!slot.model) {
          continue;
        }
        charged += slot.memory_cost;
        // Only the manager holds it: no request, queue or reconciliation does,
        // and none can take it while mutex_ is held.
        if (slot.model.use_count() == 1) {
          idle.push_back(&slot);
        }
      }
    }
    if (charged + cost <= models_budget_) {
      return true;
    }
    int64_t idle_bytes = 0;
    for (const VersionSlot* slot : idle) {
      idle_bytes += slot->memory_cost;
    }
    if (!evict || charged - idle_bytes + cost > models_budget_) {
      return false;
    }
    std::sort(idle.begin(), idle.end(), [](const VersionSlot* a, const VersionSlot* b) {
      return a->model->last_use() < b->model->last_use();
    });
    for (VersionSlot* slot : idle) {
      if (charged + cost <= models_budget_) {
        break;
      }
      charged -= slot->memory_cost;
      logger_.Info("model '{}' version {} unloaded to stay within --memory-limit ({} MiB)",
                   slot->model->name(), slot->model->version(), ToMiB(slot->memory_cost));
      freed.push_back(std::move(slot->model));
      slot->model = nullptr;
      slot->deferred = true;
      slot->state = ModelState::kUnavailable;
      slot->reason = std::string(kDeferredReason);
      budget_evictions_.Increment();
    }
  }
  if (!freed.empty()) {
    freed.clear();
    // glibc keeps freed weights for reuse; hand them back so that RSS follows
    // what is loaded rather than the most that ever was.
    malloc_trim(0);
  }
  return true;
}

Status ModelManager::LoadOnDemand(const VersionKey& key) {
  const auto& [name, version] = key;
  std::shared_ptr<const ModelOnDisk> disk;
  int64_t estimate = 0;
  {
    MutexLock lock(mutex_);
    const auto entry = models_.find(name);
    if (entry == models_.end() || unloaded_.contains(name) || !entry->second.disk) {
      return Status::Ok();  // gone meanwhile: the waiter finds out why
    }
    const auto slot = entry->second.versions.find(version);
    if (slot == entry->second.versions.end() || !slot->second.deferred) {
      return Status::Ok();
    }
    disk = entry->second.disk;
    estimate = std::max(slot->second.memory_cost, EstimateCost(disk->versions.at(version)));
  }
  if (estimate > models_budget_) {
    return Unavailable(
        fmt::format("model '{}' version {} needs about {} MiB, more than the {} MiB --memory-limit "
                    "leaves for models; raise --memory-limit",
                    name, version, ToMiB(estimate), ToMiB(models_budget_)));
  }
  if (!MakeRoom(estimate, /*evict=*/true)) {
    return Unavailable(fmt::format(
        "model '{}' version {} needs about {} MiB and --memory-limit has no room for it even "
        "after unloading every idle model; retry when fewer models are busy",
        name, version, ToMiB(estimate)));
  }
  int64_t cost = 0;
  const auto loaded = LoadMeasured(*disk, version, repository_, 0, estimate, cost);
  {
    MutexLock lock(mutex_);
    const auto entry = models_.find(name);
    if (entry == models_.end() || entry->second.disk != disk) {
      return Status::Ok();  // the repository changed meanwhile: this copy is stale
    }
    const auto slot = entry->second.versions.find(version);
    if (slot == entry->second.versions.end() || !slot->second.deferred) {
      return Status::Ok();
    }
    VersionSlot& target = slot->second;
    target.deferred = false;
    if (!loaded.ok()) {
      target.state = ModelState::kUnavailable;
      target.reason = loaded.status().message();
      logger_.Error("model '{}' version {} failed to load: {}", name, version, target.reason);
      return loaded.status();
    }
    target.model = *loaded;
    target.model->MarkUsed(++use_clock_);
    target.state = ModelState::kReady;
    target.reason.clear();
    target.memory_cost = cost;
    target.artifact_digest = target.model->artifact_digest();
    logger_.Info("model '{}' version {} loaded on demand ({} MiB charged)", name, version,
                 ToMiB(cost));
  }
  // `loaded` still holds the new version, so trimming cannot take it.
  (void)MakeRoom(0, /*evict=*/true);
  return Status::Ok();
}

void ModelManager::LoaderLoop() {
  while (true) {
    VersionKey key;
    {
      MutexLock lock(mutex_);
      while (load_queue_.empty() && !stopping_) {
        lock.Wait(load_wakeup_);
      }
      if (stopping_) {
        for (const auto& queued : load_queue_) {
          OnDemand& pending = on_demand_[queued];
          pending.queued = false;
          pending.result = Unavailable("perch is shutting down");
          ++pending.generation;
        }
        load_queue_.clear();
        load_done_.notify_all();
        return;
      }
      key = load_queue_.front();
      load_queue_.pop_front();
    }
    Status result;
    {
      MutexLock reconcile(reconcile_mutex_);
      result = LoadOnDemand(key);
    }
    MutexLock lock(mutex_);
    OnDemand& pending = on_demand_[key];
    pending.queued = false;
    pending.result = std::move(result);
    ++pending.generation;
    load_done_.notify_all();
  }
}

MemoryBudgetStatus ModelManager::MemoryBudget() const {
  MemoryBudgetStatus status{.limit_bytes = options_.memory_limit_bytes,
                            .models_bytes = models_budget_};
  MutexLock lock(mutex_);
  for (const auto& [name, entry] : models_) {
    for (const auto& [version, slot] : entry.versions) {
      if (slot.model) {
        status.charged_bytes += slot.memory_cost;
        ++status.resident_versions;
      } else if (slot.deferred) {
        ++status.deferred_versions;
      }
    }
  }
  return status;
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
  PERCH_ASSIGN_OR_RETURN(auto scan, ScanRepository(repository));
  // Pipelines after the models they chain, so their steps are there to check.
  std::stable_partition(scan.begin(), scan.end(),
                        [](const ModelOnDisk& model) { return !model.config.pipeline; });
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
      int64_t cost = 0;
      if (disk.config.pipeline) {
        MutexLock lock(mutex_);
        staged_ = &next;
        staging_thread_ = std::this_thread::get_id();
      }
      auto loaded =
          LoadMeasured(disk, version, repository, min_warmup_runs, EstimateCost(on_disk), cost);
      {
        MutexLock lock(mutex_);
        staged_ = nullptr;
      }
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
                                            .artifact_digest = std::move(digest),
                                            .memory_cost = cost,
                                            .deferred = false};
    }
    entry.disk = std::make_shared<const ModelOnDisk>(disk);
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
