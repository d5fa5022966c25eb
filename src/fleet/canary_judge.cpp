#include "fleet/canary_judge.h"

#include <fmt/format.h>

#include <algorithm>
#include <vector>

namespace perch {
namespace {

std::string Percent(double rate) { return fmt::format("{:.2f}%", 100.0 * rate); }

void Fill(CanaryVerdict& verdict, const WindowFigures& baseline, const WindowFigures& canary) {
  verdict.baseline_requests = baseline.requests;
  verdict.baseline_failures = baseline.failures;
  verdict.baseline_p99_ms = baseline.p99_ms;
  verdict.canary_requests = canary.requests;
  verdict.canary_failures = canary.failures;
  verdict.canary_p99_ms = canary.p99_ms;
}

// How many verdicts of `outcome` end the window verdicts, in a row.
int64_t Streak(const std::vector<CanaryVerdict>& verdicts, std::string_view outcome) {
  int64_t streak = 0;
  for (auto it = verdicts.rbegin(); it != verdicts.rend() && it->window_end > 0; ++it) {
    if (it->outcome != outcome) {
      break;
    }
    ++streak;
  }
  return streak;
}

}  // namespace

CanaryVerdict JudgeWindow(const CanaryAnalysis& analysis, const WindowFigures& baseline,
                          const WindowFigures& canary) {
  CanaryVerdict verdict;
  Fill(verdict, baseline, canary);
  if (canary.requests < analysis.min_requests) {
    verdict.outcome = "inconclusive";
    verdict.reason = fmt::format("{} requests on the canaries, fewer than the {} needed",
                                 canary.requests, analysis.min_requests);
    return verdict;
  }
  if (baseline.requests < analysis.min_requests) {
    verdict.outcome = "inconclusive";
    verdict.reason = fmt::format(
        "{} requests of the previous version on these devices, fewer than the {} "
        "needed to compare with",
        baseline.requests, analysis.min_requests);
    return verdict;
  }
  const double increase = canary.FailureRate() - baseline.FailureRate();
  if (increase > analysis.max_failure_rate_increase) {
    verdict.outcome = "fail";
    verdict.reason = fmt::format("failure rate {} against {} before (at most {} more allowed)",
                                 Percent(canary.FailureRate()), Percent(baseline.FailureRate()),
                                 Percent(analysis.max_failure_rate_increase));
    return verdict;
  }
  if (baseline.p99_ms > 0 && canary.p99_ms > baseline.p99_ms * analysis.max_p99_ratio) {
    verdict.outcome = "fail";
    verdict.reason = fmt::format("p99 {:.1f} ms against {:.1f} ms before (at most x{} allowed)",
                                 canary.p99_ms, baseline.p99_ms, analysis.max_p99_ratio);
    return verdict;
  }
  verdict.outcome = "pass";
  verdict.reason = fmt::format("failure rate {} against {}, p99 {:.1f} ms against {:.1f} ms",
                               Percent(canary.FailureRate()), Percent(baseline.FailureRate()),
                               canary.p99_ms, baseline.p99_ms);
  return verdict;
}

CanaryJudge::CanaryJudge(FleetStore& fleet, const MetricsStore& metrics, CanaryJudgeOptions options,
                         Logger logger)
    : fleet_(fleet), metrics_(metrics), options_(std::move(options)), logger_(std::move(logger)) {}

CanaryJudge::~CanaryJudge() {
  if (thread_.joinable()) {
    thread_.request_stop();
    wake_.notify_all();
    thread_.join();
  }
}

void CanaryJudge::Start() {
  thread_ = std::jthread([this](const std::stop_token& stop) {
    while (!stop.stop_requested()) {
      if (const Status reviewed = Review(); !reviewed.ok()) {
        logger_.Warn("canary review: {}", reviewed.message());
      }
      std::unique_lock lock(wake_mutex_);
      wake_.wait_for(lock, stop, options_.interval, [] { return false; });
    }
  });
}

Status CanaryJudge::Review() {
  Status first = Status::Ok();
  const int64_t now = options_.clock.UnixSeconds();
  for (const Deployment& deployment : fleet_.Deployments()) {
    auto running = fleet_.RunningCanaryOf(deployment.name);
    Status reviewed = running.status();
    if (running.ok() && running->has_value()) {
      reviewed = ReviewOne(**running, deployment.name, now);
    }
    if (!reviewed.ok() && reviewed.code() != StatusCode::kNotFound && first.ok()) {
      first = reviewed;
    }
  }
  return first;
}

Status CanaryJudge::ReviewOne(const FleetStore::RunningCanary& running,
                              const std::string& deployment, int64_t now) {
  const Revision& revision = running.revision;
  const CanaryAnalysis& analysis = *revision.rollout.analysis;
  const auto decide = [&](CanaryVerdict verdict) {
    verdict.at = now;
    logger_.Info("deployment '{}' revision {}: {} ({})", deployment, revision.number,
                 verdict.outcome, verdict.reason);
    return fleet_.RecordVerdict(deployment, revision.number, verdict);
  };

  // The model the canaries run, and how many could not load it.
  std::vector<std::string> devices;
  std::string model;
  int64_t version = 0;
  size_t failed = 0;
  for (const Device& device : running.devices) {
    devices.push_back(device.name);
    if (!device.heartbeat) {
      continue;
    }
    for (const ModelReport& report : device.heartbeat->models) {
      if (report.reference != revision.reference) {
        continue;
      }
      if (report.state == "FAILED") {
        ++failed;
      } else if (report.state == "READY" && !report.name.empty()) {
        model = report.name;
        version = report.version;
      }
    }
  }
  if (!devices.empty() &&
      failed * 100 >= static_cast<size_t>(analysis.max_load_failure_percent) * devices.size()) {
    CanaryVerdict verdict{
        .outcome = "rolled-back",
        .reason = fmt::format("the model failed to load on {} of {} canary "
                              "devices (the limit is {}%): rollout stopped",
                              failed, devices.size(), analysis.max_load_failure_percent)};
    return decide(verdict);
  }

  std::vector<CanaryVerdict> verdicts = revision.verdicts;
  if (!model.empty()) {
    // The baseline runs up to now, not to the revision's making: samples of
    // the previous version the devices sent after it (heartbeats lag, and a
    // device switches a little later) are still that version's figures,
    // and a canary made within a second of its predecessor has no others.
    const int64_t until = now + 1;
    PERCH_ASSIGN_OR_RETURN(const auto previous,
                           metrics_.PreviousVersion(model, version, devices, until));
    WindowFigures baseline;
    if (previous) {
      PERCH_ASSIGN_OR_RETURN(
          baseline, metrics_.Window(model, *previous, devices,
                                    revision.created_at - options_.baseline_seconds, until));
    }
    int64_t start = revision.created_at;
    for (const CanaryVerdict& verdict : verdicts) {
      start = std::max(start, verdict.window_end);
    }
    for (; start + analysis.window_seconds <= now; start += analysis.window_seconds) {
      const int64_t end = start + analysis.window_seconds;
      PERCH_ASSIGN_OR_RETURN(const WindowFigures canary,
                             metrics_.Window(model, version, devices, start, end));
      CanaryVerdict verdict = JudgeWindow(analysis, baseline, canary);
      verdict.window_start = start;
      verdict.window_end = end;
      verdict.baseline_version = previous.value_or(0);
      verdict.canary_version = version;
      PERCH_RETURN_IF_ERROR(decide(verdict));
      verdicts.push_back(verdict);
      if (Streak(verdicts, "fail") >= analysis.failing_windows) {
        CanaryVerdict rolled = verdict;
        rolled.outcome = "rolled-back";
        rolled.reason = fmt::format("{} failing windows in a row; the last: {}",
                                    analysis.failing_windows, verdict.reason);
        return decide(rolled);
      }
      if (Streak(verdicts, "pass") >= analysis.passing_windows) {
        CanaryVerdict promoted = verdict;
        promoted.outcome = "promoted";
        promoted.reason = fmt::format("{} passing windows in a row; the last: {}",
                                      analysis.passing_windows, verdict.reason);
        return decide(promoted);
      }
    }
  }
  if (now - revision.created_at >= analysis.deadline_seconds) {
    CanaryVerdict verdict{
        .outcome = "rolled-back",
        .reason = fmt::format("no decision within the deadline of {} s ({}): an unproven "
                              "revision does not stay half-deployed",
                              analysis.deadline_seconds,
                              model.empty() ? "the canaries never reported the model READY"
                                            : "too few requests to judge")};
    return decide(verdict);
  }
  return Status::Ok();
}

}  // namespace perch
