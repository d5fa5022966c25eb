// FleetAgent: the agent's side of the fleet (`perch serve --hub URL`).
// It enrols with the location's enrolment token, polls its desired state
// (conditional GET with the ETag), pulls and verifies every model of a new
// state, and switches each deployment whole or not at all: a deployment
// whose model cannot be pulled, is unsigned when it must be signed, or fails
// to load or warm up keeps what the device served for it before, the other
// deployments of the state switch, and the failure is reported in the next
// heartbeat. One bad deployment never holds back another.
//
// Everything needed to keep serving without the hub lives in STATE/fleet/:
//   device.json        the device's name, location and token (mode 0600)
//   enrolment-key      a random secret made before the first enrolment
//                      request and sent with each (mode 0600): the hub
//                      answers a repeat with this key (a lost answer) with
//                      the same device instead of refusing its name
//   current.json       the last desired state applied, with what each
//                      reference resolved to
//   releases/<etag>/   the repository served for that state: hard links to
//                      the pulled model files, so releases cost no space
// At boot the last applied release is served before the hub is asked
// anything; on reconnect the agent goes straight to the newest state.
//
// Heartbeats are snapshots of state, not events: one that cannot be sent is
// dropped, since the next carries everything, rather than queued and
// replayed stale.
//
// Threading: Start runs one background thread; the public methods are
// called from one controlling thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "core/files.h"
#include "core/log.h"
#include "core/status.h"
#include "fleet/fleet_types.h"
#include "fleet/hub_client.h"
#include "fleet/metrics_sampler.h"
#include "models/model_manager.h"

namespace perch {

// A model version pulled, verified and installed as REPO/<name>/<version>.
struct PulledModel {
  std::string name;
  int64_t version = 0;
  std::string digest;                  // manifest digest
  std::filesystem::path model_folder;  // REPO/<name>, holding <version>/ and model.json
  // A pipeline's step models (pulled by the digests it pins), served beside
  // it in the release; empty for other models.
  std::vector<PulledModel> steps{};
};

// Pulls `reference` (with `registry_token` when the registry wants one);
// the caller wires it to the model store. Unavailable when the registry
// cannot be reached and nothing is cached.
using ModelFetcher = std::function<Result<PulledModel>(const std::string& reference,
                                                       const std::string& registry_token)>;

// Frees pulled models no longer in use: `keep` maps model name to version.
using ModelPruner = std::function<Status(const std::map<std::string, int64_t>& keep)>;

struct FleetAgentOptions {
  std::string hub_url;
  // The location's enrolment token on the first start; afterwards the
  // device's own token from device.json is used.
  std::string enrolment_token;
  std::string ca_file;
  std::filesystem::path state;  // the agent's --state; FleetAgent uses state/fleet
  DeviceSpec device;
  std::chrono::milliseconds poll_interval{5000};
  std::chrono::milliseconds heartbeat_interval{10000};
  int warmup_runs = 1;  // each model runs at least this often before it serves
  // Network local: called with the location's peers and peer token, fetched
  // from the hub before each desired-state poll; on the agent's thread.
  std::function<void(const LocationPeers&)> on_peers{};
  // The system calls of the agent's durable writes (releases, current.json,
  // device.json); null: the real ones. Tests pass one that injects faults.
  FileIo* files = nullptr;
  // Stop requests it: a hub call or a model pull in progress then ends
  // within about a second instead of waiting out its timeout on a dead
  // link. The fetcher's registry clients take its token.
  std::stop_source stop{};
};

class FleetAgent {
 public:
  // Reads what an earlier run left in STATE/fleet. InvalidArgument for a bad
  // hub URL; Internal when the folders cannot be made.
  static Result<std::unique_ptr<FleetAgent>> Open(FleetAgentOptions options, ModelFetcher fetch,
                                                  ModelPruner prune, Logger logger);
  ~FleetAgent();
  FleetAgent(const FleetAgent&) = delete;
  FleetAgent& operator=(const FleetAgent&) = delete;

  // The repository to serve at start: the last state applied (an empty
  // one on the very first start).
  const std::filesystem::path& ServingRepository() const { return serving_; }

  // Starts enrolling, polling and heartbeating in the background.
  // `fill_heartbeat` adds what the agent's other parts know (the outbox
  // depth); it runs on the agent's thread.
  void Start(ModelManager& models, std::function<void(Heartbeat&)> fill_heartbeat);
  void Stop();

  // The two steps of the background thread, callable on their own (from
  // the controlling thread, while that thread is not running) so that a
  // switch can be driven without a hub:
  //
  // Pulls every model of `state` and switches `manager` to them, each
  // deployment all or none: a failing deployment keeps its previous model
  // (if any) and MakeHeartbeat reports it; the others switch. Errors, after
  // the rest is applied: the first failed pull's (Unavailable is retried at
  // the next poll). InvalidArgument for a malformed etag; Internal when the
  // release cannot be built (nothing switches).
  Status Apply(ModelManager& manager, const DesiredState& state);
  // What the next heartbeat tells the hub about `manager` and the last state.
  Heartbeat MakeHeartbeat(const ModelManager& manager);

 private:
  struct AppliedModel {
    DesiredModel desired;
    PulledModel pulled;
  };

  FleetAgent(FleetAgentOptions options, ModelFetcher fetch, ModelPruner prune, Logger logger,
             std::unique_ptr<HubClient> hub);
  Status LoadSavedState();
  Status SaveCurrent() const;
  FileIo& Files() const { return options_.files != nullptr ? *options_.files : SystemFileIo(); }
  void Run(const std::stop_token& stop);
  Status Enrol();
  // The key of STATE/fleet/enrolment-key, made (durably) when missing.
  // InvalidArgument for a damaged file.
  Result<std::string> EnrolmentKey() const;
  Result<std::filesystem::path> BuildRelease(const std::string& name,
                                             const std::vector<AppliedModel>& models) const;
  // `models` plus, for each failed deployment, what this device served for
  // it before (linked from the serving release).
  std::vector<AppliedModel> WithPreviousOf(const std::set<std::string>& failed_deployments,
                                           const std::vector<AppliedModel>& models) const;
  static bool SameModels(const std::vector<AppliedModel>& a, const std::vector<AppliedModel>& b);
  static std::string ReleaseName(const std::string& etag, const std::vector<AppliedModel>& serve,
                                 bool partial);
  // After a switch is saved: frees the releases and models no longer served.
  void DropOldReleases();
  void RemoveReleasesExcept(const std::filesystem::path& keep) const;

  const FleetAgentOptions options_;
  const ModelFetcher fetch_;
  const ModelPruner prune_;
  const Logger logger_;
  const std::filesystem::path folder_;  // STATE/fleet
  std::unique_ptr<HubClient> hub_;

  // Owned by the agent's thread once Start has run.
  std::string device_name_;
  std::string device_token_;
  std::string applied_etag_;
  std::vector<AppliedModel> applied_;
  std::string seen_etag_;                   // last state fetched (applied or refused)
  std::vector<ModelReport> failed_models_;  // of the last refused state
  std::string last_error_;
  std::filesystem::path serving_;
  std::string last_logged_problem_;
  std::string last_peers_problem_;
  // The last inference time, read off the models' request counters at each
  // heartbeat (so to within one interval) rather than stamped per request.
  uint64_t requests_seen_ = 0;
  int64_t last_inference_at_ = 0;
  MetricsSampler sampler_;  // each heartbeat's metrics

  ModelManager* models_ = nullptr;
  std::function<void(Heartbeat&)> fill_heartbeat_;
  std::mutex wake_mutex_;
  std::condition_variable_any wake_;
  std::jthread thread_;
};

}  // namespace perch
