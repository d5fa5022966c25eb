// `perch serve --bundles`: an agent with no hub that serves the location
// bundles `perch bundle import` puts into its --state (bundle/bundle_import.h).
// At start it serves the last imported release (an empty repository before
// the first import); a background thread looks at STATE/bundle/current.json
// every `interval` and, when a newer generation is there, switches the
// ModelManager to it whole (SwitchRepository: every model loaded and warmed
// up first) or, when a model fails, keeps serving the release before.
//
// Threading: Start runs one background thread; Start, Stop and
// ServingRepository are called from one controlling thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/log.h"
#include "core/status.h"
#include "models/model_manager.h"
#include "signing/signing.h"

namespace perch::cli {

// The keys given with --trust-key, or else every STATE/trust/*.pem.
Result<std::vector<signing::PublicKey>> LoadTrustKeys(const std::vector<std::string>& flags,
                                                      const std::filesystem::path& state);

// The generation of the last bundle imported into `state`, 0 when none (or
// unreadable): what an agent reports in its heartbeats.
int64_t ImportedBundleGeneration(const std::filesystem::path& state);

class BundleAgent {
 public:
  // InvalidArgument for a current.json that is not perch's; Internal when
  // the folders cannot be made.
  static Result<std::unique_ptr<BundleAgent>> Open(const std::filesystem::path& state,
                                                   std::chrono::milliseconds interval,
                                                   int warmup_runs, Logger logger);
  ~BundleAgent();
  BundleAgent(const BundleAgent&) = delete;
  BundleAgent& operator=(const BundleAgent&) = delete;

  const std::filesystem::path& ServingRepository() const { return serving_; }
  void Start(ModelManager& models);
  void Stop();

 private:
  BundleAgent(std::filesystem::path state, std::chrono::milliseconds interval, int warmup_runs,
              Logger logger, std::filesystem::path serving, int64_t generation);
  void Check(ModelManager& models);

  const std::filesystem::path state_;
  const std::chrono::milliseconds interval_;
  const int warmup_runs_;
  const Logger logger_;
  std::filesystem::path serving_;
  // Owned by the background thread once started.
  int64_t generation_;
  int64_t refused_generation_ = 0;
  std::jthread thread_;
};

}  // namespace perch::cli
