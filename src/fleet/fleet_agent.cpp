#include "fleet/fleet_agent.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string_view>

#include "core/files.h"

namespace perch {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kDeviceFile = "device.json";
constexpr const char* kCurrentFile = "current.json";
constexpr const char* kEmptyRelease = "empty";

// Hard links, so a release shares the pulled files instead of copying them.
Status LinkTree(const fs::path& from, const fs::path& to) {
  std::error_code error;
  fs::copy(from, to, fs::copy_options::recursive | fs::copy_options::create_hard_links, error);
  if (error) {
    return Internal("cannot link " + from.string() + " into " + to.string() + ": " +
                    error.message());
  }
  return Status::Ok();
}

// MemAvailable of /proc/meminfo in bytes ("MemAvailable:  8041232 kB"):
// the kernel's estimate of what can be allocated without swapping. 0 where
// there is no such file (not Linux) or line (kernels before 3.14).
int64_t MemoryAvailableBytes() {
  std::ifstream meminfo("/proc/meminfo");
  constexpr std::string_view kKey = "MemAvailable:";
  for (std::string line; std::getline(meminfo, line);) {
    if (line.starts_with(kKey)) {
      const int64_t kib = std::strtoll(line.c_str() + kKey.size(), nullptr, 10);
      return kib > 0 ? kib * 1024 : 0;
    }
  }
  return 0;
}

}  // namespace

FleetAgent::FleetAgent(FleetAgentOptions options, ModelFetcher fetch, ModelPruner prune,
                       Logger logger, std::unique_ptr<HubClient> hub)
    : options_(std::move(options)),
      fetch_(std::move(fetch)),
      prune_(std::move(prune)),
      logger_(std::move(logger)),
      folder_(options_.state / "fleet"),
      hub_(std::move(hub)) {}

FleetAgent::~FleetAgent() { Stop(); }

Result<std::unique_ptr<FleetAgent>> FleetAgent::Open(FleetAgentOptions options, ModelFetcher fetch,
                                                     ModelPruner prune, Logger logger) {
  PERCH_ASSIGN_OR_RETURN(auto hub,
                         HubClient::Create(HubClientOptions{.url = options.hub_url,
                                                            .token = options.enrolment_token,
                                                            .timeout = std::chrono::seconds(10),
                                                            .ca_file = options.ca_file}));
  std::unique_ptr<FleetAgent> agent(new FleetAgent(
      std::move(options), std::move(fetch), std::move(prune), std::move(logger), std::move(hub)));
  std::error_code error;
  fs::create_directories(agent->folder_ / "releases" / kEmptyRelease, error);
  if (error) {
    return Internal("cannot create " + agent->folder_.string() + ": " + error.message());
  }
  PERCH_RETURN_IF_ERROR(agent->LoadSavedState());
  return agent;
}

Status FleetAgent::LoadSavedState() {
  serving_ = folder_ / "releases" / kEmptyRelease;
  if (auto device = ReadFile(folder_ / kDeviceFile); device.ok()) {
    const json saved = json::parse(*device, nullptr, false);
    if (!saved.is_object() || !saved.value("name", json()).is_string() ||
        !saved.value("token", json()).is_string()) {
      return InvalidArgument((folder_ / kDeviceFile).string() +
                             " is damaged: remove it to enrol this device again");
    }
    if (saved.value("hub", std::string()) != hub_->url()) {
      logger_.Warn(
          "this device was enrolled with hub {}, now it is given {}; keeping its "
          "enrolment",
          saved.value("hub", std::string()), hub_->url());
    }
    device_name_ = saved["name"].get<std::string>();
    device_token_ = saved["token"].get<std::string>();
    hub_->SetToken(device_token_);
  }
  auto current = ReadFile(folder_ / kCurrentFile);
  if (!current.ok()) {
    return Status::Ok();  // never applied a state: serve nothing until the hub says
  }
  const json saved = json::parse(*current, nullptr, false);
  if (!saved.is_object() || !saved.value("etag", json()).is_string() ||
      !saved.value("models", json()).is_array()) {
    logger_.Error("{} is damaged; starting with no models until the hub is reached",
                  (folder_ / kCurrentFile).string());
    return Status::Ok();
  }
  const fs::path release = folder_ / "releases" / saved["etag"].get<std::string>();
  if (!fs::is_directory(release)) {
    logger_.Error(
        "the release of the last applied state ({}) is missing; starting with no "
        "models until the hub is reached",
        release.string());
    return Status::Ok();
  }
  applied_etag_ = saved["etag"].get<std::string>();
  seen_etag_ = applied_etag_;
  for (const json& model : saved["models"]) {
    applied_.push_back(AppliedModel{
        .desired = DesiredModel{.deployment = model.value("deployment", ""),
                                .revision = model.value("revision", int64_t{0}),
                                .reference = model.value("reference", "")},
        .pulled = PulledModel{.name = model.value("name", ""),
                              .version = model.value("version", int64_t{0}),
                              .digest = model.value("digest", ""),
                              .model_folder = {}},
    });
  }
  serving_ = release;
  logger_.Info("serving the last applied desired state {} ({} models) from {}", applied_etag_,
               applied_.size(), release.string());
  return Status::Ok();
}

Status FleetAgent::SaveCurrent() const {
  json models = json::array();
  for (const AppliedModel& model : applied_) {
    models.push_back({{"deployment", model.desired.deployment},
                      {"revision", model.desired.revision},
                      {"reference", model.desired.reference},
                      {"name", model.pulled.name},
                      {"version", model.pulled.version},
                      {"digest", model.pulled.digest}});
  }
  return WriteFileAtomically(folder_ / kCurrentFile,
                             json{{"etag", applied_etag_}, {"models", models}}.dump(2) + "\n");
}

void FleetAgent::Start(ModelManager& models, std::function<void(Heartbeat&)> fill_heartbeat) {
  models_ = &models;
  fill_heartbeat_ = std::move(fill_heartbeat);
  thread_ = std::jthread([this](const std::stop_token& stop) { Run(stop); });
}

void FleetAgent::Stop() {
  if (thread_.joinable()) {
    thread_.request_stop();
    wake_.notify_all();
    thread_.join();
  }
}

Status FleetAgent::Enrol() {
  if (options_.enrolment_token.empty()) {
    return InvalidArgument(
        "this device is not enrolled yet: give the location's enrolment "
        "token with --token");
  }
  PERCH_ASSIGN_OR_RETURN(const WithToken<Device> enrolled, hub_->Enrol(options_.device));
  const json saved = {{"hub", hub_->url()},
                      {"name", enrolled.value.name},
                      {"location", enrolled.value.location},
                      {"token", enrolled.token}};
  PERCH_RETURN_IF_ERROR(WriteFileAtomically(folder_ / kDeviceFile, saved.dump(2) + "\n", 0600));
  device_name_ = enrolled.value.name;
  device_token_ = enrolled.token;
  hub_->SetToken(device_token_);
  logger_.Info("enrolled as device '{}' of location '{}' with hub {}", device_name_,
               enrolled.value.location, hub_->url());
  return Status::Ok();
}

void FleetAgent::Run(const std::stop_token& stop) {
  using Clock = std::chrono::steady_clock;
  auto next_poll = Clock::now();
  auto next_heartbeat = Clock::now();
  std::chrono::milliseconds backoff(500);
  // Logs a problem once, not on every retry.
  const auto report = [this](const Status& status, const std::string& context) {
    const std::string problem = context + ": " + status.message();
    if (problem != last_logged_problem_) {
      logger_.Warn("{}", problem);
      last_logged_problem_ = problem;
    }
  };
  while (!stop.stop_requested()) {
    if (device_token_.empty()) {
      if (const Status enrolled = Enrol(); !enrolled.ok()) {
        report(enrolled, "cannot enrol with hub " + hub_->url());
        backoff = std::min(backoff * 2, std::chrono::milliseconds(30000));
        std::unique_lock lock(wake_mutex_);
        wake_.wait_for(lock, stop, backoff, [] { return false; });
        continue;
      }
      backoff = std::chrono::milliseconds(500);
    }
    const auto now = Clock::now();
    if (now >= next_poll) {
      next_poll = now + options_.poll_interval;
      if (options_.on_peers) {
        // First, so that a pull the new state starts asks fresh peers.
        if (auto peers = hub_->GetPeers(device_name_); peers.ok()) {
          last_peers_problem_.clear();
          options_.on_peers(*peers);
        } else {
          if (peers.status().message() != last_peers_problem_) {
            last_peers_problem_ = peers.status().message();
            logger_.Warn("cannot get this location's peers: {}", last_peers_problem_);
          }
        }
      }
      auto state = hub_->GetDesiredState(device_name_, seen_etag_);
      if (!state.ok()) {
        report(state.status(), "cannot get the desired state (still serving " +
                                   (applied_etag_.empty() ? "nothing" : applied_etag_) + ")");
      } else if (state->has_value() && (*state)->etag == applied_etag_) {
        // Back to what is served (a rollback of a refused update): nothing
        // to switch, only the refusal to forget.
        seen_etag_ = applied_etag_;
        failed_models_.clear();
        last_error_.clear();
        next_heartbeat = Clock::now();
      } else if (state->has_value()) {
        last_logged_problem_.clear();
        if (const Status applied = Apply(*models_, **state); !applied.ok()) {
          report(applied, "desired state " + (*state)->etag + " not applied");
        }
        next_heartbeat = Clock::now();  // tell the hub at once
      } else {
        last_logged_problem_.clear();
      }
    }
    if (Clock::now() >= next_heartbeat) {
      next_heartbeat = Clock::now() + options_.heartbeat_interval;
      if (const Status sent = hub_->SendHeartbeat(device_name_, MakeHeartbeat(*models_));
          !sent.ok()) {
        report(sent, "cannot send a heartbeat");
      }
    }
    std::unique_lock lock(wake_mutex_);
    wake_.wait_until(lock, stop, std::min(next_poll, next_heartbeat), [] { return false; });
  }
}

Status FleetAgent::Apply(ModelManager& manager, const DesiredState& state) {
  logger_.Info("desired state {}: {} models", state.etag, state.models.size());
  std::vector<AppliedModel> models;
  std::set<std::string> names;
  failed_models_.clear();
  for (const DesiredModel& desired : state.models) {
    auto pulled = fetch_(desired.reference, device_token_);
    if (!pulled.ok()) {
      last_error_ = "cannot pull " + desired.reference + ": " + pulled.status().message();
      failed_models_.push_back(ModelReport{.name = {},
                                           .version = 0,
                                           .reference = desired.reference,
                                           .digest = {},
                                           .state = "FAILED",
                                           .error = pulled.status().message()});
      // Unreachable registries come back: ask again at the next poll.
      seen_etag_ = pulled.status().code() == StatusCode::kUnavailable ? "" : state.etag;
      return Status(pulled.status().code(), last_error_);
    }
    if (!names.insert(pulled->name).second) {
      last_error_ =
          "two deployments place model '" + pulled->name + "' on this device; only one may";
      seen_etag_ = state.etag;
      return InvalidArgument(last_error_);
    }
    // The deployment's own demand, kept even on a device without trust keys
    // (which then cannot tell who signed, only that someone did).
    const fs::path signature = pulled->model_folder / std::to_string(pulled->version) / "model.sig";
    std::error_code missing;
    if (desired.require_signature && !fs::is_regular_file(signature, missing)) {
      last_error_ = "desired state " + state.etag + " was refused: deployment " +
                    desired.deployment + " requires a signature and model '" + pulled->name +
                    "' version " + std::to_string(pulled->version) +
                    " is unsigned; still serving " +
                    (applied_etag_.empty() ? "no models" : applied_etag_);
      failed_models_.push_back(ModelReport{
          .name = pulled->name,
          .version = pulled->version,
          .reference = desired.reference,
          .digest = pulled->digest,
          .state = "FAILED",
          .error = "unsigned, and deployment " + desired.deployment + " requires a signature"});
      seen_etag_ = state.etag;
      logger_.Error("{}", last_error_);
      return Status::Ok();  // handled: reported in the heartbeat, not retried
    }
    models.push_back(AppliedModel{.desired = desired, .pulled = std::move(pulled).value()});
  }
  auto release = BuildRelease(state.etag, models);
  if (!release.ok()) {
    last_error_ = release.status().message();
    seen_etag_ = "";
    return release.status();
  }
  if (const Status switched = manager.SwitchRepository(*release, options_.warmup_runs);
      !switched.ok()) {
    last_error_ = "desired state " + state.etag + " was refused: " + switched.message() +
                  "; still serving " + (applied_etag_.empty() ? "no models" : applied_etag_);
    for (const AppliedModel& model : models) {
      if (switched.message().find("'" + model.pulled.name + "'") != std::string::npos) {
        failed_models_.push_back(ModelReport{.name = model.pulled.name,
                                             .version = model.pulled.version,
                                             .reference = model.desired.reference,
                                             .digest = model.pulled.digest,
                                             .state = "FAILED",
                                             .error = switched.message()});
      }
    }
    std::error_code ignored;
    fs::remove_all(*release, ignored);
    seen_etag_ = state.etag;
    logger_.Error("{}", last_error_);
    return Status::Ok();  // handled: reported in the heartbeat, not retried
  }
  applied_ = std::move(models);
  applied_etag_ = state.etag;
  seen_etag_ = state.etag;
  serving_ = *release;
  last_error_.clear();
  if (const Status saved = SaveCurrent(); !saved.ok()) {
    logger_.Error("the desired state is applied but could not be saved: {}", saved.message());
  }
  RemoveReleasesExcept(serving_);
  std::map<std::string, int64_t> keep;
  for (const AppliedModel& model : applied_) {
    keep[model.pulled.name] = model.pulled.version;
  }
  if (const Status pruned = prune_(keep); !pruned.ok()) {
    logger_.Warn("cannot free the models no longer deployed: {}", pruned.message());
  }
  logger_.Info("desired state {} applied: serving {} models", state.etag, applied_.size());
  return Status::Ok();
}

Result<fs::path> FleetAgent::BuildRelease(const std::string& etag,
                                          const std::vector<AppliedModel>& models) const {
  if (etag.empty() || etag.find_first_not_of("0123456789abcdef") != std::string::npos) {
    return InvalidArgument("the hub sent a desired state with a malformed etag");
  }
  const fs::path release = folder_ / "releases" / etag;
  const fs::path staging = folder_ / "releases" / (".staging-" + etag);
  std::error_code error;
  fs::remove_all(staging, error);
  fs::create_directories(staging, error);
  if (error) {
    return Internal("cannot create " + staging.string() + ": " + error.message());
  }
  for (const AppliedModel& model : models) {
    const fs::path target = staging / model.pulled.name;
    fs::create_directories(target, error);
    const fs::path config = model.pulled.model_folder / "model.json";
    if (fs::exists(config, error)) {
      fs::create_hard_link(config, target / "model.json", error);
    }
    const std::string version = std::to_string(model.pulled.version);
    PERCH_RETURN_IF_ERROR(LinkTree(model.pulled.model_folder / version, target / version));
  }
  if (fs::exists(release, error)) {
    fs::remove_all(release, error);
  }
  fs::rename(staging, release, error);
  if (error) {
    return Internal("cannot move " + staging.string() + " into place: " + error.message());
  }
  return release;
}

void FleetAgent::RemoveReleasesExcept(const fs::path& keep) const {
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(folder_ / "releases", error)) {
    if (entry.path() != keep && entry.path().filename() != kEmptyRelease) {
      std::error_code ignored;
      fs::remove_all(entry.path(), ignored);
    }
  }
}

Heartbeat FleetAgent::MakeHeartbeat(const ModelManager& manager) {
  Heartbeat heartbeat;
  heartbeat.applied_etag = applied_etag_;
  for (const VersionStatus& status : manager.Index()) {
    ModelReport report{.name = status.model,
                       .version = status.version.value_or(0),
                       .reference = {},
                       .digest = {},
                       .state = std::string(ToString(status.state)),
                       .error = status.reason};
    for (const AppliedModel& model : applied_) {
      if (model.pulled.name == status.model) {
        report.reference = model.desired.reference;
        report.digest = model.pulled.digest;
      }
    }
    heartbeat.models.push_back(std::move(report));
  }
  heartbeat.models.insert(heartbeat.models.end(), failed_models_.begin(), failed_models_.end());
  if (!last_error_.empty()) {
    heartbeat.errors.push_back(last_error_);
  }
  uint64_t requests = 0;
  for (const auto& served : manager.ServedModels()) {
    requests += served->requests.Value();
  }
  if (requests > requests_seen_) {
    last_inference_at_ = std::chrono::duration_cast<std::chrono::seconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  }
  requests_seen_ = requests;  // a switch to new model copies starts their counts at 0
  heartbeat.last_inference_at = last_inference_at_;
  double load[1] = {0};
  if (getloadavg(load, 1) == 1) {
    heartbeat.load = load[0];
  }
  heartbeat.memory_available_bytes = MemoryAvailableBytes();
  heartbeat.facts = options_.device.facts;
  if (fill_heartbeat_) {
    fill_heartbeat_(heartbeat);
  }
  return heartbeat;
}

}  // namespace perch
