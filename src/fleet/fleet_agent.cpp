#include "fleet/fleet_agent.h"

#include <fmt/format.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string_view>
#include <utility>

#include "core/files.h"

namespace perch {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kDeviceFile = "device.json";
constexpr const char* kEnrolmentKeyFile = "enrolment-key";
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
      hub_(std::move(hub)),
      sampler_(options_.state) {}

FleetAgent::~FleetAgent() { Stop(); }

Result<std::unique_ptr<FleetAgent>> FleetAgent::Open(FleetAgentOptions options, ModelFetcher fetch,
                                                     ModelPruner prune, Logger logger) {
  PERCH_ASSIGN_OR_RETURN(auto hub,
                         HubClient::Create(HubClientOptions{.url = options.hub_url,
                                                            .token = options.enrolment_token,
                                                            .timeout = std::chrono::seconds(10),
                                                            .ca_file = options.ca_file,
                                                            .stop = options.stop.get_token()}));
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
  // "release" since states are applied in part; older files name only the etag.
  const std::string release_name = saved.value("release", json()).is_string()
                                       ? saved["release"].get<std::string>()
                                       : saved["etag"].get<std::string>();
  if (release_name.empty() || release_name.find('/') != std::string::npos ||
      release_name.starts_with('.')) {
    logger_.Error("{} is damaged; starting with no models until the hub is reached",
                  (folder_ / kCurrentFile).string());
    return Status::Ok();
  }
  const fs::path release = folder_ / "releases" / release_name;
  if (!fs::is_directory(release)) {
    logger_.Error(
        "the release of the last applied state ({}) is missing; starting with no "
        "models until the hub is reached",
        release.string());
    return Status::Ok();
  }
  // A field of the wrong type (a damaged file) throws out of nlohmann's
  // value(): the file is then damaged like any other.
  std::vector<AppliedModel> applied;
  try {
    for (const json& model : saved["models"]) {
      std::vector<PulledModel> steps;
      for (const json& step : model.value("steps", json::array())) {
        if (step.is_object()) {
          steps.push_back(PulledModel{.name = step.value("name", ""),
                                      .version = step.value("version", int64_t{0}),
                                      .digest = step.value("digest", ""),
                                      .model_folder = {}});
        }
      }
      applied.push_back(AppliedModel{
          .desired = DesiredModel{.deployment = model.value("deployment", ""),
                                  .revision = model.value("revision", int64_t{0}),
                                  .reference = model.value("reference", "")},
          .pulled = PulledModel{.name = model.value("name", ""),
                                .version = model.value("version", int64_t{0}),
                                .digest = model.value("digest", ""),
                                .model_folder = {},
                                .steps = std::move(steps)},
      });
    }
  } catch (const json::exception&) {
    logger_.Error("{} is damaged; starting with no models until the hub is reached",
                  (folder_ / kCurrentFile).string());
    return Status::Ok();
  }
  applied_etag_ = saved["etag"].get<std::string>();
  seen_etag_ = applied_etag_;
  applied_ = std::move(applied);
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
    if (!model.pulled.steps.empty()) {
      json steps = json::array();
      for (const PulledModel& step : model.pulled.steps) {
        steps.push_back({{"name", step.name}, {"version", step.version}, {"digest", step.digest}});
      }
      models.back()["steps"] = std::move(steps);
    }
  }
  return WriteFileAtomically(
      folder_ / kCurrentFile,
      json{{"etag", applied_etag_}, {"release", serving_.filename().string()}, {"models", models}}
              .dump(2) +
          "\n",
      0644, Files());
}

void FleetAgent::Start(ModelManager& models, std::function<void(Heartbeat&)> fill_heartbeat) {
  models_ = &models;
  fill_heartbeat_ = std::move(fill_heartbeat);
  thread_ = std::jthread([this](const std::stop_token& stop) { Run(stop); });
}

void FleetAgent::Stop() {
  if (thread_.joinable()) {
    options_.stop.request_stop();
    thread_.request_stop();
    wake_.notify_all();
    thread_.join();
  }
}

Result<std::string> FleetAgent::EnrolmentKey() const {
  const fs::path file = folder_ / kEnrolmentKeyFile;
  auto saved = ReadFile(file);
  if (saved.ok()) {
    std::string key = std::move(saved).value();
    while (!key.empty() && (key.back() == '\n' || key.back() == '\r')) {
      key.pop_back();
    }
    if (!IsValidEnrolmentKey(key)) {
      return InvalidArgument(file.string() +
                             " is damaged: remove it to have a new key made (a device name the "
                             "hub enrolled with the old key must then be revoked or changed)");
    }
    return key;
  }
  if (saved.status().code() != StatusCode::kNotFound) {
    return saved.status();
  }
  std::array<unsigned char, 32> bytes{};
  if (getrandom(bytes.data(), bytes.size(), 0) != static_cast<ssize_t>(bytes.size())) {
    return Unavailable("the system's random source could not be read for an enrolment key");
  }
  std::string key;
  for (const unsigned char byte : bytes) {
    key += fmt::format("{:02x}", byte);
  }
  PERCH_RETURN_IF_ERROR(WriteFileAtomically(file, key + "\n", 0600, Files()));
  return key;
}

Status FleetAgent::Enrol() {
  if (options_.enrolment_token.empty()) {
    return InvalidArgument(
        "this device is not enrolled yet: give the location's enrolment "
        "token with --token");
  }
  // Durable before the first request, so that every repeat (the answer
  // lost in a cut, the agent killed before device.json) sends the same key
  // and the hub answers this device again instead of refusing its name.
  DeviceSpec spec = options_.device;
  PERCH_ASSIGN_OR_RETURN(spec.enrolment_key, EnrolmentKey());
  PERCH_ASSIGN_OR_RETURN(const WithToken<Device> enrolled, hub_->Enrol(spec));
  const json saved = {{"hub", hub_->url()},
                      {"name", enrolled.value.name},
                      {"location", enrolled.value.location},
                      {"token", enrolled.token}};
  PERCH_RETURN_IF_ERROR(
      WriteFileAtomically(folder_ / kDeviceFile, saved.dump(2) + "\n", 0600, Files()));
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
  // Logs a problem once, not on every retry; a call that Stop ended is none.
  const auto report = [this, &stop](const Status& status, const std::string& context) {
    if (stop.stop_requested()) {
      return;
    }
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
      } else if (state->has_value() && (*state)->etag == applied_etag_ && failed_models_.empty()) {
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
  if (state.etag.empty() || state.etag.find_first_not_of("0123456789abcdef") != std::string::npos) {
    return InvalidArgument("the hub sent a desired state with a malformed etag");
  }
  logger_.Info("desired state {}: {} models", state.etag, state.models.size());
  failed_models_.clear();
  std::vector<std::string> problems;
  std::set<std::string> failed_deployments;
  Status pull_error = Status::Ok();
  bool retry = false;
  // A deployment that fails is reported and left out; the others go on
  // (one mistyped deployment must not hold back the rest).
  const auto fail = [&](const DesiredModel& desired, ModelReport report, std::string problem) {
    report.reference = desired.reference;
    report.state = "FAILED";
    failed_models_.push_back(std::move(report));
    problems.push_back("deployment " + desired.deployment + ": " + std::move(problem));
    failed_deployments.insert(desired.deployment);
  };
  std::vector<AppliedModel> models;
  std::map<std::string, std::string> deployment_of_model;
  for (const DesiredModel& desired : state.models) {
    auto pulled = fetch_(desired.reference, device_token_);
    if (!pulled.ok() && pulled.status().code() == StatusCode::kCancelled) {
      return pulled.status();  // stopping: switch nothing; the next start applies the state
    }
    if (!pulled.ok()) {
      fail(desired, ModelReport{.error = pulled.status().message()},
           "cannot pull " + desired.reference + ": " + pulled.status().message());
      // Unreachable registries come back: ask again at the next poll.
      retry = retry || pulled.status().code() == StatusCode::kUnavailable;
      if (pull_error.ok()) {
        pull_error = Status(pulled.status().code(), problems.back());
      }
      continue;
    }
    const auto [taken, inserted] = deployment_of_model.emplace(pulled->name, desired.deployment);
    if (!inserted) {
      fail(desired,
           ModelReport{.name = pulled->name,
                       .version = pulled->version,
                       .digest = pulled->digest,
                       .error = "model '" + pulled->name + "' is placed by deployment " +
                                taken->second + " too; only one may"},
           "model '" + pulled->name + "' is placed on this device by deployment " + taken->second +
               " too; only one may");
      continue;
    }
    // The deployment's own demand, kept even on a device without trust keys
    // (which then cannot tell who signed, only that someone did).
    const fs::path signature = pulled->model_folder / std::to_string(pulled->version) / "model.sig";
    std::error_code missing;
    if (desired.require_signature && !fs::is_regular_file(signature, missing)) {
      deployment_of_model.erase(pulled->name);
      fail(desired,
           ModelReport{
               .name = pulled->name,
               .version = pulled->version,
               .digest = pulled->digest,
               .error = "unsigned, and deployment " + desired.deployment + " requires a signature",
               .signature = {.state = "refused"}},
           "requires a signature and model '" + pulled->name + "' version " +
               std::to_string(pulled->version) + " is unsigned");
      continue;
    }
    models.push_back(AppliedModel{.desired = desired, .pulled = std::move(pulled).value()});
  }
  // Switch to the models that pulled; a refusal names the models it is
  // about, whose deployments are then left out and the rest tried again.
  // Each round leaves out at least one deployment, so this ends.
  std::optional<std::pair<std::vector<AppliedModel>, fs::path>> switched_to;
  const size_t rounds = models.size() + 1;
  for (size_t round = 0; round <= rounds; ++round) {
    std::vector<AppliedModel> serve = WithPreviousOf(failed_deployments, models);
    if (SameModels(serve, applied_)) {
      break;  // nothing to switch: what serves stays
    }
    auto release = BuildRelease(ReleaseName(state.etag, serve, !failed_deployments.empty()), serve);
    if (!release.ok()) {
      last_error_ = release.status().message();
      seen_etag_ = "";
      return release.status();
    }
    const Status switched = manager.SwitchRepository(*release, options_.warmup_runs);
    if (switched.ok()) {
      switched_to.emplace(std::move(serve), *release);
      break;
    }
    std::error_code ignored;
    fs::remove_all(*release, ignored);
    const auto named = [&](const AppliedModel& model) {
      return switched.message().find("'" + model.pulled.name + "'") != std::string::npos;
    };
    const bool any_named = std::any_of(models.begin(), models.end(), named);
    for (const AppliedModel& model : models) {
      if (!any_named || named(model)) {
        fail(model.desired,
             ModelReport{.name = model.pulled.name,
                         .version = model.pulled.version,
                         .digest = model.pulled.digest,
                         .error = switched.message()},
             switched.message());
      }
    }
    std::erase_if(models, [&](const AppliedModel& model) {
      return failed_deployments.contains(model.desired.deployment);
    });
  }
  // Reported applied only once current.json says so, so that a restart
  // serves it too: until then the heartbeat keeps the etag current.json
  // names, whose release stays, and the next poll tries again.
  std::vector<AppliedModel> previous = applied_;
  const fs::path previous_serving = serving_;
  std::string previous_etag = std::exchange(applied_etag_, state.etag);
  if (switched_to) {
    applied_ = std::move(switched_to->first);
    serving_ = switched_to->second;
  }
  if (const Status saved = SaveCurrent(); !saved.ok()) {
    applied_ = std::move(previous);
    serving_ = previous_serving;
    applied_etag_ = std::move(previous_etag);
    seen_etag_ = "";
    last_error_ =
        "desired state " + state.etag + " is served but could not be saved: " + saved.message();
    logger_.Error("{}", last_error_);
    return Status(saved.code(), last_error_);
  }
  if (switched_to) {
    DropOldReleases();
  }
  seen_etag_ = retry ? "" : state.etag;
  last_error_.clear();
  if (!problems.empty()) {
    last_error_ = "desired state " + state.etag + ": " + std::to_string(failed_deployments.size()) +
                  " deployment(s) refused, keeping what this device served for them before (the "
                  "others are applied): ";
    for (size_t i = 0; i < problems.size(); ++i) {
      last_error_ += (i == 0 ? "" : "; ") + problems[i];
    }
    logger_.Error("{}", last_error_);
  }
  logger_.Info("desired state {} applied: serving {} models", state.etag, applied_.size());
  return pull_error;
}

std::vector<FleetAgent::AppliedModel> FleetAgent::WithPreviousOf(
    const std::set<std::string>& failed_deployments,
    const std::vector<AppliedModel>& models) const {
  std::vector<AppliedModel> serve = models;
  for (const AppliedModel& previous : applied_) {
    const bool name_taken = std::any_of(models.begin(), models.end(), [&](const auto& model) {
      return model.pulled.name == previous.pulled.name;
    });
    if (failed_deployments.contains(previous.desired.deployment) && !name_taken) {
      AppliedModel kept = previous;
      kept.pulled.model_folder = serving_ / previous.pulled.name;  // linked from what serves
      serve.push_back(std::move(kept));
    }
  }
  return serve;
}

bool FleetAgent::SameModels(const std::vector<AppliedModel>& a,
                            const std::vector<AppliedModel>& b) {
  const auto key = [](const std::vector<AppliedModel>& models) {
    std::set<std::string> keys;
    for (const AppliedModel& model : models) {
      keys.insert(model.desired.deployment + " " + model.pulled.name + " " +
                  std::to_string(model.pulled.version) + " " + model.pulled.digest);
    }
    return keys;
  };
  return key(a) == key(b);
}

std::string FleetAgent::ReleaseName(const std::string& etag, const std::vector<AppliedModel>& serve,
                                    bool partial) {
  if (!partial) {
    return etag;
  }
  // A state applied in part gets a release named by what it holds, so that
  // applying the rest later never rebuilds the folder being served.
  std::string content;
  for (const AppliedModel& model : serve) {
    content += model.desired.deployment + " " + model.pulled.digest + "\n";
  }
  return fmt::format("{}-{:016x}", etag, std::hash<std::string>{}(content));
}

void FleetAgent::DropOldReleases() {
  RemoveReleasesExcept(serving_);
  std::map<std::string, int64_t> keep;
  for (const AppliedModel& model : applied_) {
    keep[model.pulled.name] = model.pulled.version;
    for (const PulledModel& step : model.pulled.steps) {
      keep.emplace(step.name, step.version);
    }
  }
  if (const Status pruned = prune_(keep); !pruned.ok()) {
    logger_.Warn("cannot free the models no longer deployed: {}", pruned.message());
  }
}

Result<fs::path> FleetAgent::BuildRelease(const std::string& name,
                                          const std::vector<AppliedModel>& models) const {
  const fs::path release = folder_ / "releases" / name;
  const fs::path staging = folder_ / "releases" / (".staging-" + name);
  std::error_code error;
  fs::remove_all(staging, error);
  fs::create_directories(staging, error);
  if (error) {
    return Internal("cannot create " + staging.string() + ": " + error.message());
  }
  std::vector<const PulledModel*> pulled;
  for (const AppliedModel& model : models) {
    pulled.push_back(&model.pulled);
  }
  // A pipeline's steps after every deployed model: a model deployed on its
  // own and pinned by a pipeline too is linked once.
  for (const AppliedModel& model : models) {
    for (const PulledModel& step : model.pulled.steps) {
      pulled.push_back(&step);
    }
  }
  for (const PulledModel* model : pulled) {
    const fs::path target = staging / model->name;
    if (fs::exists(target, error)) {
      continue;
    }
    fs::create_directories(target, error);
    const fs::path config = model->model_folder / "model.json";
    if (fs::exists(config, error)) {
      fs::create_hard_link(config, target / "model.json", error);
    }
    const std::string version = std::to_string(model->version);
    PERCH_RETURN_IF_ERROR(LinkTree(model->model_folder / version, target / version));
  }
  // The release's folders and links are durable before it is switched to
  // and named in current.json (the linked files are synced blobs).
  PERCH_RETURN_IF_ERROR(SyncTree(staging, Files()));
  if (fs::exists(release, error)) {
    fs::remove_all(release, error);
  }
  if (Files().Rename(staging, release) != 0) {
    return Internal("cannot move " + staging.string() + " into place: " + std::strerror(errno));
  }
  PERCH_RETURN_IF_ERROR(SyncDirectory(folder_ / "releases", Files()));
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
  heartbeat.metrics = sampler_.Sample(manager);
  heartbeat.facts = options_.device.facts;
  if (fill_heartbeat_) {
    fill_heartbeat_(heartbeat);
  }
  return heartbeat;
}

}  // namespace perch
