// The hub's device metrics and the canary analysis on them: a real
// FleetStore and MetricsStore on one database, a ManualClock, heartbeats
// as agents send them.
#include "fleet/canary_judge.h"

#include <gtest/gtest.h>

#include "core/clock.h"
#include "fleet/fleet_json.h"
#include "fleet/metrics_store.h"

namespace perch {
namespace {

namespace fs = std::filesystem;

constexpr const char* kOld = "hub.local/m:1";
constexpr const char* kNew = "hub.local/m:2";

class CanaryJudgeTest : public testing::Test {
 protected:
  void SetUp() override {
    path_ = fs::path(testing::TempDir()) /
            (std::string("canary_") +
             testing::UnitTest::GetInstance()->current_test_info()->name() + ".db");
    for (const char* suffix : {"", "-wal", "-shm"}) {
      fs::remove(path_.string() + suffix);
    }
    auto fleet = FleetStore::Open({.database = path_,
                                   .clock = clock_.AsWallClock(),
                                   .placement_review_interval = std::chrono::hours(1)});
    ASSERT_TRUE(fleet.ok()) << fleet.status().message();
    fleet_ = std::move(fleet).value();
    auto metrics = MetricsStore::Open({.database = path_, .clock = clock_.AsWallClock()});
    ASSERT_TRUE(metrics.ok()) << metrics.status().message();
    metrics_ = std::move(metrics).value();
    judge_ = std::make_unique<CanaryJudge>(*fleet_, *metrics_,
                                           CanaryJudgeOptions{.clock = clock_.AsWallClock()},
                                           Logger::ToStderr(LogLevel::kWarn, "canary"));
    const auto location = fleet_->CreateLocation({.name = "site", .description = "", .labels = {}});
    ASSERT_TRUE(location.ok());
    for (const char* device : {"d1", "d2", "d3", "d4"}) {
      ASSERT_TRUE(fleet_
                      ->Enrol(location->token, {.name = device,
                                                .labels = {},
                                                .architecture = "amd64",
                                                .perch_version = "0",
                                                .addresses = {}})
                      .ok());
    }
    ASSERT_TRUE(fleet_->Deploy({.name = "m", .reference = kOld}, false).ok());
  }

  // Every device reports what it serves, with `requests` over the last 10 s
  // at `failures` and `p99_ms`.
  void Beat(int64_t requests, int64_t failures, double p99_ms, const std::string& state = "READY",
            double old_p99_ms = 10) {
    clock_.Advance(std::chrono::seconds(10));
    for (const char* device : {"d1", "d2", "d3", "d4"}) {
      const auto desired = fleet_->DesiredStateFor(device);
      ASSERT_TRUE(desired.ok());
      Heartbeat heartbeat;
      HeartbeatMetrics metrics{.interval_seconds = 10, .models = {}, .vitals = {}};
      for (const DesiredModel& model : desired->models) {
        const int64_t version = model.reference == kNew ? 2 : 1;
        const bool is_new = model.reference == kNew;
        heartbeat.models.push_back({.name = "m",
                                    .version = version,
                                    .reference = model.reference,
                                    .digest = "",
                                    .state = is_new ? state : "READY",
                                    .error = ""});
        const bool slow = is_new;
        metrics.models.push_back({.name = "m",
                                  .version = version,
                                  .requests = requests,
                                  .failures = slow ? failures : 0,
                                  .p50_ms = 1,
                                  .p99_ms = slow ? p99_ms : old_p99_ms});
      }
      heartbeat.metrics = metrics;
      ASSERT_TRUE(fleet_->RecordHeartbeat(device, heartbeat).ok());
      ASSERT_TRUE(metrics_->Record(device, "site", metrics).ok());
    }
  }

  Revision Current() {
    const auto deployment = fleet_->GetDeployment("m");
    EXPECT_TRUE(deployment.ok());
    return deployment.ok() && deployment->Current() ? *deployment->Current() : Revision{};
  }

  void DeployCanary(CanaryAnalysis analysis) {
    Rollout rollout{.strategy = RolloutStrategy::kCanary,
                    .canary_percent = 50,
                    .canary_healthy_seconds = 0,
                    .require_signature = false,
                    .analysis = analysis};
    ASSERT_TRUE(fleet_->Deploy({.name = "m", .reference = kNew, .rollout = rollout}, false).ok());
  }

  ManualClock clock_{WallClock::TimePoint(std::chrono::seconds(1'700'000'000))};
  fs::path path_;
  std::unique_ptr<FleetStore> fleet_;
  std::unique_ptr<MetricsStore> metrics_;
  std::unique_ptr<CanaryJudge> judge_;
};

TEST(JudgeWindowTest, DecidesOnFiguresWithEnoughRequests) {
  const CanaryAnalysis analysis;  // min 50 requests, +1 point failures, x1.5 p99
  const WindowFigures before{.requests = 1000, .failures = 10, .p99_ms = 20};
  EXPECT_EQ(JudgeWindow(analysis, before, {.requests = 49, .failures = 49, .p99_ms = 900}).outcome,
            "inconclusive");
  EXPECT_EQ(JudgeWindow(analysis, {.requests = 10}, {.requests = 500}).outcome, "inconclusive");
  EXPECT_EQ(JudgeWindow(analysis, before, {.requests = 100, .failures = 1, .p99_ms = 29}).outcome,
            "pass");
  const CanaryVerdict slow = JudgeWindow(analysis, before, {.requests = 100, .p99_ms = 31});
  EXPECT_EQ(slow.outcome, "fail");
  EXPECT_NE(slow.reason.find("p99 31.0 ms against 20.0 ms"), std::string::npos) << slow.reason;
  const CanaryVerdict failing = JudgeWindow(analysis, before, {.requests = 100, .failures = 3});
  EXPECT_EQ(failing.outcome, "fail");
  EXPECT_NE(failing.reason.find("failure rate 3.00% against 1.00%"), std::string::npos)
      << failing.reason;
}

TEST_F(CanaryJudgeTest, ASlowCanaryIsRolledBackOnEveryDeviceWithItsFigures) {
  for (int i = 0; i < 12; ++i) {
    Beat(20, 0, 10);  // two minutes of the old version as the baseline
  }
  DeployCanary(CanaryAnalysis{.window_seconds = 30, .min_requests = 50, .failing_windows = 2});
  EXPECT_FALSE(Current().promoted);
  for (int i = 0; i < 7; ++i) {
    Beat(20, 0, 80);
    ASSERT_TRUE(judge_->Review().ok());
  }
  const auto deployment = fleet_->GetDeployment("m");
  ASSERT_TRUE(deployment.ok());
  const Revision& canary = deployment->revisions.back();
  EXPECT_TRUE(canary.rolled_back);
  ASSERT_GE(canary.verdicts.size(), 3U);
  const CanaryVerdict& last = canary.verdicts.back();
  EXPECT_EQ(last.outcome, "rolled-back");
  EXPECT_EQ(last.baseline_version, 1);
  EXPECT_EQ(last.canary_version, 2);
  EXPECT_NEAR(last.canary_p99_ms, 80, 0.01);
  EXPECT_NEAR(last.baseline_p99_ms, 10, 0.01);
  EXPECT_NE(last.reason.find("2 failing windows in a row"), std::string::npos) << last.reason;
  for (const char* device : {"d1", "d2", "d3", "d4"}) {
    EXPECT_EQ(fleet_->DesiredStateFor(device)->models.at(0).reference, kOld) << device;
  }
  // The verdicts survive a restart of the hub.
  fleet_.reset();
  judge_.reset();
  auto reopened = FleetStore::Open({.database = path_, .clock = clock_.AsWallClock()});
  ASSERT_TRUE(reopened.ok()) << reopened.status().message();
  EXPECT_EQ((*reopened)->GetDeployment("m")->revisions.back().verdicts.size(),
            canary.verdicts.size());
}

TEST_F(CanaryJudgeTest, AGoodCanaryIsPromoted) {
  for (int i = 0; i < 12; ++i) {
    Beat(20, 0, 10);
  }
  DeployCanary(CanaryAnalysis{.window_seconds = 30, .min_requests = 50, .passing_windows = 2});
  for (int i = 0; i < 8 && !Current().promoted; ++i) {
    Beat(20, 0, 11);
    ASSERT_TRUE(judge_->Review().ok());
  }
  EXPECT_TRUE(Current().promoted);
  EXPECT_EQ(Current().verdicts.back().outcome, "promoted");
  for (const char* device : {"d1", "d2", "d3", "d4"}) {
    EXPECT_EQ(fleet_->DesiredStateFor(device)->models.at(0).reference, kNew) << device;
  }
}

TEST_F(CanaryJudgeTest, TooFewRequestsHoldUntilTheDeadline) {
  for (int i = 0; i < 12; ++i) {
    Beat(20, 0, 10);
  }
  DeployCanary(CanaryAnalysis{.window_seconds = 30, .min_requests = 50, .deadline_seconds = 120});
  for (int i = 0; i < 11; ++i) {
    Beat(1, 0, 500);  // far slower, but too little traffic to say
    ASSERT_TRUE(judge_->Review().ok());
    EXPECT_FALSE(Current().rolled_back) << "rolled back on inconclusive windows";
    EXPECT_FALSE(Current().promoted);
  }
  EXPECT_EQ(Current().verdicts.back().outcome, "inconclusive");
  Beat(1, 0, 500);
  ASSERT_TRUE(judge_->Review().ok());
  const auto deployment = fleet_->GetDeployment("m");
  const Revision& canary = deployment->revisions.back();
  EXPECT_TRUE(canary.rolled_back);
  EXPECT_NE(canary.verdicts.back().reason.find("deadline"), std::string::npos);
}

TEST_F(CanaryJudgeTest, AModelFailingToLoadOnTheCanariesStopsTheRollout) {
  Beat(20, 0, 10);
  DeployCanary(CanaryAnalysis{});
  Beat(0, 0, 0, "FAILED");
  ASSERT_TRUE(judge_->Review().ok());
  const auto deployment = fleet_->GetDeployment("m");
  const Revision& canary = deployment->revisions.back();
  EXPECT_TRUE(canary.rolled_back);
  EXPECT_NE(canary.verdicts.back().reason.find("failed to load on 2 of 2"), std::string::npos)
      << canary.verdicts.back().reason;
}

TEST_F(CanaryJudgeTest, MetricsQueriesAreBoundedAndPaged) {
  for (int i = 0; i < 5; ++i) {
    Beat(20, 1, 10);
  }
  const int64_t now = clock_.AsWallClock().UnixSeconds();
  EXPECT_EQ(metrics_->Query({.from = now - 8 * 86400, .to = now}).status().code(),
            StatusCode::kInvalidArgument);  // longer than seven days
  EXPECT_EQ(metrics_->Query({.from = now, .to = now - 1}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(metrics_->Query({.from = now - 60, .to = now, .limit = 0}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(metrics_->Query({.from = now - 60, .to = now, .limit = 1001}).status().code(),
            StatusCode::kInvalidArgument);

  // Five beats of four devices: 20 rows; pages of 6 end on whole seconds.
  std::vector<ModelPoint> seen;
  MetricsQuery query{.model = "m", .from = now - 100, .to = now, .limit = 6};
  for (int page_count = 0; page_count < 10; ++page_count) {
    const auto page = metrics_->Query(query);
    ASSERT_TRUE(page.ok()) << page.status().message();
    seen.insert(seen.end(), page->models.begin(), page->models.end());
    if (!page->next_from) {
      break;
    }
    query.from = *page->next_from;
  }
  EXPECT_EQ(seen.size(), 20U);
  const auto device = metrics_->Query({.device = "d1", .from = now - 100, .to = now});
  ASSERT_TRUE(device.ok());
  EXPECT_EQ(device->models.size(), 5U);
  EXPECT_EQ(device->vitals.size(), 5U);
  EXPECT_EQ(device->models[0].metrics.requests, 20);
}

TEST_F(CanaryJudgeTest, OldSamplesAreRolledUpThenDropped) {
  Beat(20, 1, 10);
  Beat(20, 1, 10, "READY", 30);
  clock_.Advance(std::chrono::hours(7));
  Beat(20, 1, 10);  // rolls up what is older than six hours
  const int64_t now = clock_.AsWallClock().UnixSeconds();
  const auto page = metrics_->Query({.device = "d1", .from = now - 8 * 3600, .to = now});
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->models.size(), 2U);  // one 5-minute bucket and the new sample
  EXPECT_EQ(page->models[0].metrics.requests, 40);
  EXPECT_NEAR(page->models[0].metrics.p99_ms, 30, 0.01);
  clock_.Advance(std::chrono::hours(24 * 8));
  Beat(20, 1, 10);
  const int64_t later = clock_.AsWallClock().UnixSeconds();
  const auto old = metrics_->Query({.device = "d1", .from = later - 6 * 86400, .to = later});
  ASSERT_TRUE(old.ok());
  EXPECT_EQ(old->models.size(), 1U);
}

}  // namespace
}  // namespace perch
