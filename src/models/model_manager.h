// ModelManager: keeps the served models equal to what the repository on
// disk says (the desired state), loading and unloading versions to match.
//
// Requests hold a std::shared_ptr<LoadedModel>; a version that is unloaded
// or replaced is freed only when the last request on it finishes, so no
// request ever sees its model disappear mid-flight.
//
// Threading: every public method is thread-safe. Loads run without holding
// the lock that Acquire takes, so serving never waits for a load; one
// reconciliation (start, poll, load or unload call) runs at a time.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
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

 private:
  const std::string name_;
  const int64_t version_;
  const ModelConfig config_;
  const ModelSignature signature_;
  const std::unique_ptr<Session> session_;
  const std::string artifact_digest_;
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
  };
  struct ModelEntry {
    std::string config_fingerprint;
    std::map<int64_t, VersionSlot> versions;
    std::string reason;  // model-level trouble: no versions, model.json errors
  };

  void Reconcile() REQUIRES(reconcile_mutex_) EXCLUDES(mutex_);
  Status ReconcileModel(const ModelOnDisk& disk, bool force) REQUIRES(reconcile_mutex_)
      EXCLUDES(mutex_);
  Result<std::shared_ptr<LoadedModel>> LoadVersion(const ModelOnDisk& disk, int64_t version,
                                                   const std::filesystem::path& repository,
                                                   int min_warmup_runs = 0);
  void PollLoop(const std::stop_token& stop);

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

  std::condition_variable_any poll_wakeup_;
  std::mutex poll_mutex_;
  std::jthread poller_;
};

}  // namespace perch
