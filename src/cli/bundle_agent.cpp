#include "cli/bundle_agent.h"

#include <condition_variable>
#include <mutex>

#include "bundle/bundle_import.h"

namespace perch::cli {

namespace fs = std::filesystem;

Result<std::vector<signing::PublicKey>> LoadTrustKeys(const std::vector<std::string>& flags,
                                                      const fs::path& state) {
  if (!flags.empty()) {
    return signing::LoadPublicKeys(std::vector<fs::path>(flags.begin(), flags.end()));
  }
  return signing::LoadPublicKeysInFolder(state / "trust");
}

int64_t ImportedBundleGeneration(const fs::path& state) {
  auto site = bundle::ReadSiteState(state);
  return site.ok() && *site ? (*site)->generation : 0;
}

BundleAgent::BundleAgent(fs::path state, std::chrono::milliseconds interval, int warmup_runs,
                         Logger logger, fs::path serving, int64_t generation)
    : state_(std::move(state)),
      interval_(interval),
      warmup_runs_(warmup_runs),
      logger_(std::move(logger)),
      serving_(std::move(serving)),
      generation_(generation) {}

BundleAgent::~BundleAgent() { Stop(); }

Result<std::unique_ptr<BundleAgent>> BundleAgent::Open(const fs::path& state,
                                                       std::chrono::milliseconds interval,
                                                       int warmup_runs, Logger logger) {
  PERCH_ASSIGN_OR_RETURN(const auto site, bundle::ReadSiteState(state));
  fs::path serving = state / "bundle" / "empty";
  int64_t generation = 0;
  if (site) {
    serving = site->release;
    generation = site->generation;
    logger.Info("serving location bundle generation {} (location {}, imported {})",
                site->generation, site->location, site->imported_at);
  } else {
    logger.Info(
        "no location bundle imported into {} yet: serving nothing until "
        "`perch bundle import FILE --state {}`",
        state.string(), state.string());
  }
  std::error_code error;
  fs::create_directories(serving, error);
  if (error) {
    return Internal("cannot create " + serving.string() + ": " + error.message());
  }
  return std::unique_ptr<BundleAgent>(
      new BundleAgent(state, interval, warmup_runs, std::move(logger), serving, generation));
}

void BundleAgent::Start(ModelManager& models) {
  thread_ = std::jthread([this, &models](const std::stop_token& stop) {
    std::mutex mutex;
    std::condition_variable_any wake;
    while (!stop.stop_requested()) {
      Check(models);
      std::unique_lock lock(mutex);
      wake.wait_for(lock, stop, interval_, [] { return false; });
    }
  });
}

void BundleAgent::Stop() {
  if (thread_.joinable()) {
    thread_.request_stop();
    thread_.join();
  }
}

void BundleAgent::Check(ModelManager& models) {
  auto site = bundle::ReadSiteState(state_);
  if (!site.ok()) {
    logger_.Error("{}", site.status().message());
    return;
  }
  if (!*site || (*site)->generation == generation_ || (*site)->generation == refused_generation_) {
    return;
  }
  const bundle::SiteState& next = **site;
  const Status switched = models.SwitchRepository(next.release, warmup_runs_);
  if (!switched.ok()) {
    refused_generation_ = next.generation;
    logger_.Error("location bundle generation {} is not served: {}; generation {} keeps serving",
                  next.generation, switched.message(), generation_);
    return;
  }
  logger_.Info("switched to location bundle generation {} (location {}, {} models)",
               next.generation, next.location, next.models.size());
  generation_ = next.generation;
}

}  // namespace perch::cli
