// CanaryJudge: the hub's canary analysis (docs/fleet.md "Canary analysis").
// For each deployment whose current revision is a canary with an analysis,
// it compares, window by window, the new model version's failure rate and
// p99 latency on the canary devices with the previous version's on the
// same devices in the hour before the revision was made, as the devices
// reported them in their heartbeats (MetricsStore). Each whole window gets
// a verdict with its figures: inconclusive (too few requests on either
// side), fail or pass. `failing_windows` fails in a row roll the revision
// back on every device; `passing_windows` passes in a row promote it; a
// model that fails to load on `max_load_failure_percent` of the canary
// devices rolls it back at once; no promotion by `deadline_seconds` after
// the revision was made rolls it back too (an unproven revision does not
// stay half-deployed). Every verdict is kept with the revision.
//
// Threading: Review is called by the judge's own thread (Start) or, in
// tests, by the caller with no thread running. The stores are thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <stop_token>
#include <thread>

#include "core/clock.h"
#include "core/log.h"
#include "core/status.h"
#include "fleet/fleet_store.h"
#include "fleet/metrics_store.h"

namespace perch {

// The verdict on one window: pass, fail or inconclusive, with the reason.
// Figures and window are the caller's to fill in.
CanaryVerdict JudgeWindow(const CanaryAnalysis& analysis, const WindowFigures& baseline,
                          const WindowFigures& canary);

struct CanaryJudgeOptions {
  WallClock clock{};
  std::chrono::milliseconds interval{1000};  // between reviews
  int64_t baseline_seconds = 3600;           // before the revision, measured as baseline
};

class CanaryJudge {
 public:
  // `fleet` and `metrics` must outlive the judge.
  CanaryJudge(FleetStore& fleet, const MetricsStore& metrics, CanaryJudgeOptions options,
              Logger logger);
  ~CanaryJudge();
  CanaryJudge(const CanaryJudge&) = delete;
  CanaryJudge& operator=(const CanaryJudge&) = delete;

  // Reviews every `interval` on a thread of its own until destruction.
  void Start();
  // One review of every running canary. The first error met (a store that
  // cannot be read or written); the other deployments are reviewed anyway.
  Status Review();

 private:
  Status ReviewOne(const FleetStore::RunningCanary& running, const std::string& deployment,
                   int64_t now);

  FleetStore& fleet_;
  const MetricsStore& metrics_;
  const CanaryJudgeOptions options_;
  const Logger logger_;
  std::mutex wake_mutex_;
  std::condition_variable_any wake_;
  std::jthread thread_;  // last: stops first
};

}  // namespace perch
