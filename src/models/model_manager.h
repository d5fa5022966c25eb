// ModelManager: keeps the served models equal to what the repository on
// disk says (the desired state), loading and unloading versions to match.
//
// Requests hold a std::shared_ptr<LoadedModel>; a version that is unloaded
// or replaced is freed only when the last request on it finishes, so no
// request ever sees its model disappear mid-flight.
//
// With a memory budget (ModelManagerOptions::memory_limit_bytes), versions
// load at start while they fit; the others, and those unloaded to make room
// (the least recently used idle ones first), load on their next Acquire,
// which waits for that load up to the caller's deadline. See
// docs/model-repository.md, "Memory budget".
//
// Threading: every public method is thread-safe. Loads run without holding
// the lock that Acquire takes, so serving never waits for a load of another
// model; one reconciliation (start, poll, load or unload call, or a load on
// demand, which runs on the manager's loader thread) runs at a time.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "core/log.h"
#include "core/metrics.h"
#include "core/status.h"
#include "core/thread_annotations.h"
#include "engine/engine.h"
#include "models/model_config.h"
#include "models/repository.h"

namespace perch {

enum class ModelState { kLoading, kReady, kUnavailable };

// "LOADING", "READY", "UNAVAILABLE", as the repository extension spells them.
std::string_view ToString(ModelState state);
std::optional<ModelState> ModelStateFromString(std::string_view name);

// One version, loaded and ready. Shared by the manager and in-flight requests.
class LoadedModel {
 public:
  LoadedModel(std::string name, int64_t version, ModelConfig config, ModelSignature signature,
              std::unique_ptr<Session> session, MetricsRegistry& metrics,
              std::string artifact_digest = {});

  const std::string& name() const { return name_; }
  int64_t version() const { return version_; }
  const ModelConfig& config() const { return config_; }
  const ModelSignature& signature() const { return signature_; }
  Session& session() const { return *session_; }
  // What every answer names as the artifact that produced it: the manifest
  // digest it was pulled as, or its signature's root digest; may be empty.
  const std::string& artifact_digest() const { return artifact_digest_; }

  Counter& requests;
  Counter& failures;
  Histogram& queue_seconds;
  Histogram& compute_seconds;
  Histogram& batch_size;  // requests merged into one engine run
  Gauge& pending;         // requests queued for a worker, set by the scheduler

  // The manager's use clock at the last Acquire: the least recently used
  // idle version is unloaded first when the memory budget is short.
  void MarkUsed(uint64_t tick) const { last_use_.store(tick, std::memory_order_relaxed); }
  uint64_t last_use() const { return last_use_.load(std::memory_order_relaxed); }

  // How long an engine run of this version takes lately (a moving average
  // over the last few runs), for the scheduler to tell a model quick enough
  // to run on a transport's own thread; 0 before the first run.
  void RecordRun(std::chrono::nanoseconds took) const {
    const int64_t before = typical_run_ns_.load(std::memory_order_relaxed);
    const int64_t now = std::max<int64_t>(took.count(), 1);  // 0 means no run yet
    // Racing updates may lose a sample: this is an estimate.
    typical_run_ns_.store(before == 0 ? now : before + (now - before) / 8,
                          std::memory_order_relaxed);
  }
  std::chrono::nanoseconds typical_run() const {
    return std::chrono::nanoseconds(typical_run_ns_.load(std::memory_order_relaxed));
  }

 private:
  const std::string name_;
  const int64_t version_;
  const ModelConfig config_;
  const ModelSignature signature_;
  const std::unique_ptr<Session> session_;
  const std::string artifact_digest_;
  mutable std::atomic<uint64_t> last_use_{0};
  mutable std::atomic<int64_t> typical_run_ns_{0};
};

struct VersionStatus {
  std::string model;
  std::optional<int64_t> version;  // none when the model has no usable version
  ModelState state = ModelState::kUnavailable;
  std::string reason;  // why it is unavailable, or what went wrong with a newer copy
  // Where the version being served was pulled from; empty when not pulled.
  std::string artifact_reference;
  std::string artifact_digest;
};

// Checks a version before it loads: the agent's trust policy (its
// signature) lives behind this, so models/ does not depend on signing/.
// Given the model name, its version folder and the digest it was pulled as
// ("" for a local folder), returns the digest that names the version in
// answers, or the reason it must not serve. Called from the reconciling
// thread, one call at a time.
using VersionCheck = std::function<Result<std::string>(const std::string& model,
                                                       const std::filesystem::path& version_folder,
                                                       const std::string& artifact_digest)>;

class ModelManager;

// Loads a version of a model whose model.json is of kind "pipeline" (see
// src/pipeline): given the manager that serves its step models, the model
// as scanned and the version. Called from the reconciling thread; the
// manager lock is not held, so the loader may Acquire step models.
using PipelineLoader = std::function<Result<std::unique_ptr<Session>>(
    const ModelManager& models, const ModelOnDisk& model, int64_t version)>;

struct ModelManagerOptions {
  std::filesystem::path repository;
  std::chrono::milliseconds poll_interval{0};  // 0: no polling
  VersionCheck check_version{};                // unset: every version may load
  PipelineLoader load_pipeline{};              // unset: pipelines are not served
  // Bytes the whole process may keep resident (--memory-limit); 0: no
  // budget, every selected version loads at start and stays loaded.
  int64_t memory_limit_bytes = 0;
};

// What the memory budget holds now, for logs, metrics and benchmarks.
struct MemoryBudgetStatus {
  int64_t limit_bytes = 0;    // 0: no budget
  int64_t models_bytes = 0;   // what the models may use: the limit less the base at start
  int64_t charged_bytes = 0;  // charged to the versions in memory
  int64_t resident_versions = 0;
  int64_t deferred_versions = 0;  // selected, not in memory: load on their next request
};

class ModelManager {
 public:
  ModelManager(ModelManagerOptions options, Engine& engine, MetricsRegistry& metrics,
               Logger logger);
  ~ModelManager();
  ModelManager(const ModelManager&) = delete;
  ModelManager& operator=(const ModelManager&) = delete;

  // Loads everything the repository holds, then starts polling if asked.
  // NotFound if the repository is missing; a model that fails to load is
  // reported in Index() and the log, not here.
  Status Start();
  void Stop();

  // True once Start() has finished its first pass.
  bool Ready() const;

  // The version to run a request on: `version` ("" for the newest ready one).
  // NotFound: unknown model or version; InvalidArgument: malformed name or
  // version; Unavailable: known but not ready (the reason is in the message).
  Result<std::shared_ptr<LoadedModel>> Acquire(std::string_view name,
                                               std::string_view version) const;
  // The same, and a version out of memory (see the memory budget) is loaded
  // first, waiting until `deadline` at most (none: until the load ends).
  // DeadlineExceeded: still loading at the deadline; Unavailable: it cannot
  // fit even after unloading every idle version (retry later).
  Result<std::shared_ptr<LoadedModel>> Acquire(
      std::string_view name, std::string_view version,
      std::optional<std::chrono::steady_clock::time_point> deadline) const;

  // Whether `name`/`version` can be served here, as Acquire would say,
  // without loading a version that is out of memory (for routing).
  Status Lookup(std::string_view name, std::string_view version) const;
  // The version Acquire would hand out when it is in memory now; null
  // otherwise. Loads nothing and counts no use (a peek, for scheduling).
  std::shared_ptr<LoadedModel> Resident(std::string_view name, std::string_view version) const;

  MemoryBudgetStatus MemoryBudget() const;

  // The newest ready version of every model that has one.
  std::vector<std::shared_ptr<LoadedModel>> ServedModels() const;

  // The ready versions of `name`, ascending.
  std::vector<int64_t> ReadyVersions(std::string_view name) const;

  // Every model and version with its state, for the repository index.
  std::vector<VersionStatus> Index() const;

  // Reads `name` from disk again and loads it, even if unchanged; undoes an
  // UnloadModel. NotFound if the folder is missing; the load error otherwise.
  Status LoadModel(const std::string& name);

  // Stops serving `name` until LoadModel; the poller leaves it alone.
  Status UnloadModel(const std::string& name);

  // Serves exactly what `repository` (another folder in the same layout)
  // holds, all at once or not at all: every selected version is loaded
  // (versions whose files are unchanged are reused, not reloaded) and run
  // `min_warmup_runs` times at least, and only when every one is ready do
  // the served models switch; requests in flight finish on the old ones.
  // On any failure nothing changes and the error names the model. Later
  // polls and LoadModel read the new repository.
  Status SwitchRepository(const std::filesystem::path& repository, int min_warmup_runs);

  // The repository folder being served.
  std::filesystem::path repository() const;

 private:
  struct VersionSlot {
    std::string fingerprint;             // of what is loaded, or of the copy that failed
    std::shared_ptr<LoadedModel> model;  // set when ready
    ModelState state = ModelState::kLoading;
    std::string reason;
    std::string artifact_reference;  // of the copy that is loaded
    std::string artifact_digest;
    int64_t memory_cost = 0;  // bytes charged to the budget while `model` is set
    bool deferred = false;    // selected but out of memory: loads on its next request
  };
  struct ModelEntry {
    std::string config_fingerprint;
    std::map<int64_t, VersionSlot> versions;
    std::string reason;                       // model-level trouble: no versions, model.json errors
    std::shared_ptr<const ModelOnDisk> disk;  // what a load on demand reads
  };
  using VersionKey = std::pair<std::string, int64_t>;
  // A load on demand that requests wait for; `generation` counts the ones done.
  struct OnDemand {
    bool queued = false;
    uint64_t generation = 0;
    Status result;
  };

  void Reconcile() REQUIRES(reconcile_mutex_) EXCLUDES(mutex_);
  Status ReconcileModel(const ModelOnDisk& disk, bool force) REQUIRES(reconcile_mutex_)
      EXCLUDES(mutex_);
  Result<std::shared_ptr<LoadedModel>> LoadVersion(const ModelOnDisk& disk, int64_t version,
                                                   const std::filesystem::path& repository,
                                                   int min_warmup_runs = 0);
  void PollLoop(const std::stop_token& stop);

  bool Budgeted() const { return options_.memory_limit_bytes > 0; }
  // The room a version needs to load: three times its folder's size plus a
  // session's overhead (docs/model-repository.md, "Memory budget").
  static int64_t EstimateCost(const VersionOnDisk& version);
  // LoadVersion, measuring what it cost (see memory_budget.h).
  Result<std::shared_ptr<LoadedModel>> LoadMeasured(const ModelOnDisk& disk, int64_t version,
                                                    const std::filesystem::path& repository,
                                                    int min_warmup_runs, int64_t estimate,
                                                    int64_t& cost) REQUIRES(reconcile_mutex_);
  // Makes room for `cost` more bytes in the budget, unloading idle versions
  // (no request holds them), least recently used first, when `evict`; false,
  // with nothing unloaded, when they cannot make enough room.
  bool MakeRoom(int64_t cost, bool evict) REQUIRES(reconcile_mutex_) EXCLUDES(mutex_);
  Status LoadOnDemand(const VersionKey& key) REQUIRES(reconcile_mutex_) EXCLUDES(mutex_);
  void LoaderLoop() EXCLUDES(mutex_, reconcile_mutex_);
  // Finds `name`/`version` under the lock: the model, or the version that
  // must be loaded first (in `load`), or why it cannot serve.
  Result<std::shared_ptr<LoadedModel>> Find(std::string_view name, std::optional<int64_t> wanted,
                                            std::optional<int64_t>& load) const REQUIRES(mutex_);

  const ModelManagerOptions options_;
  Engine& engine_;
  MetricsRegistry& metrics_;
  const Logger logger_;

  Mutex reconcile_mutex_ ACQUIRED_BEFORE(mutex_);  // one reconciliation at a time
  // Written under both mutexes, so either is enough to read it.
  std::filesystem::path repository_;

  mutable Mutex mutex_;
  std::map<std::string, ModelEntry, std::less<>> models_ GUARDED_BY(mutex_);
  std::set<std::string, std::less<>> unloaded_ GUARDED_BY(mutex_);
  bool ready_ GUARDED_BY(mutex_) = false;
  // While SwitchRepository loads a pipeline, the step models it checks are
  // the ones the new repository loaded, not yet published: Find looks them
  // up here, for the switching thread only (requests keep seeing models_).
  const std::map<std::string, ModelEntry, std::less<>>* staged_ GUARDED_BY(mutex_) = nullptr;
  std::thread::id staging_thread_ GUARDED_BY(mutex_);

  // The memory budget: what models may use (the limit less the base at
  // Start), and what the versions loaded by the current reconciliation but
  // not yet published are charged.
  int64_t models_budget_ = 0;
  int64_t pending_charge_ GUARDED_BY(reconcile_mutex_) = 0;
  mutable std::atomic<uint64_t> use_clock_{0};
  mutable std::deque<VersionKey> load_queue_ GUARDED_BY(mutex_);
  mutable std::map<VersionKey, OnDemand> on_demand_ GUARDED_BY(mutex_);
  bool stopping_ GUARDED_BY(mutex_) = false;
  mutable std::condition_variable load_wakeup_;  // with mutex_: work for the loader
  mutable std::condition_variable load_done_;    // with mutex_: a load on demand ended
  Counter& budget_hits_;
  Counter& budget_misses_;
  Counter& budget_evictions_;
  Histogram& load_seconds_;
  std::jthread loader_;

  std::condition_variable_any poll_wakeup_;
  std::mutex poll_mutex_;
  std::jthread poller_;
};

}  // namespace perch
