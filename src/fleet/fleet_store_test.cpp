#include "fleet/fleet_store.h"

#include <gtest/gtest.h>

#include <thread>

#include "core/clock.h"

namespace perch {
namespace {

namespace fs = std::filesystem;

class FleetStoreTest : public testing::Test {
 protected:
  void SetUp() override {
    path_ = fs::path(testing::TempDir()) /
            (std::string("fleet_") + testing::UnitTest::GetInstance()->current_test_info()->name() +
             ".db");
    fs::remove(path_);
    fs::remove(path_.string() + "-wal");
    fs::remove(path_.string() + "-shm");
    Reopen();
  }

  void Reopen() {
    store_.reset();
    auto store = FleetStore::Open({.database = path_, .clock = clock_.AsWallClock()});
    ASSERT_TRUE(store.ok()) << store.status().message();
    store_ = std::move(store).value();
  }

  std::string MakeLocation(const std::string& name) {
    auto created = store_->CreateLocation({.name = name, .description = "", .labels = {}});
    EXPECT_TRUE(created.ok()) << created.status().message();
    return created.ok() ? created->token : "";
  }

  std::string MakeDevice(const std::string& enrolment, const std::string& name,
                         Labels labels = {}) {
    auto enrolled = store_->Enrol(enrolment, {.name = name,
                                              .labels = std::move(labels),
                                              .architecture = "amd64",
                                              .perch_version = "0.1.0",
                                              .addresses = {"10.0.0.1"}});
    EXPECT_TRUE(enrolled.ok()) << enrolled.status().message();
    return enrolled.ok() ? enrolled->token : "";
  }

  std::vector<std::string> References(const std::string& device) {
    auto state = store_->DesiredStateFor(device);
    EXPECT_TRUE(state.ok());
    std::vector<std::string> references;
    for (const auto& model : state->models) {
      references.push_back(model.reference);
    }
    return references;
  }

  void ReportReady(const std::string& device, const std::string& reference) {
    Heartbeat heartbeat;
    heartbeat.models.push_back({.name = "m",
                                .version = 1,
                                .reference = reference,
                                .digest = "",
                                .state = "READY",
                                .error = ""});
    ASSERT_TRUE(store_->RecordHeartbeat(device, heartbeat).ok());
  }

  fs::path path_;
  ManualClock clock_{WallClock::TimePoint(std::chrono::seconds(1000))};
  std::unique_ptr<FleetStore> store_;
};

TEST_F(FleetStoreTest, EnrolsDevicesWithTheLocationToken) {
  const std::string enrolment = MakeLocation("plant-a");
  EXPECT_EQ(store_->CreateLocation({.name = "plant-a"}).status().code(),
            StatusCode::kAlreadyExists);
  EXPECT_EQ(store_->CreateLocation({.name = "Bad Name"}).status().code(),
            StatusCode::kInvalidArgument);

  const std::string token = MakeDevice(enrolment, "pi-1");
  auto device = store_->AuthenticateDevice(token);
  ASSERT_TRUE(device.ok());
  EXPECT_EQ(device->name, "pi-1");
  EXPECT_EQ(device->location, "plant-a");

  EXPECT_EQ(store_->Enrol("perch_wrong", {.name = "pi-2"}).status().code(),
            StatusCode::kUnauthenticated);
  EXPECT_EQ(store_->Enrol(enrolment, {.name = "pi-1"}).status().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(store_->AuthenticateDevice(enrolment).status().code(), StatusCode::kUnauthenticated);

  ASSERT_TRUE(store_->RevokeDevice("pi-1").ok());
  EXPECT_EQ(store_->AuthenticateDevice(token).status().code(), StatusCode::kUnauthenticated);
}

TEST_F(FleetStoreTest, RotatedEnrolmentTokensReplaceTheOldOne) {
  const std::string old_token = MakeLocation("plant-a");
  auto rotated = store_->RotateEnrolmentToken("plant-a");
  ASSERT_TRUE(rotated.ok());
  EXPECT_EQ(store_->Enrol(old_token, {.name = "pi-1"}).status().code(),
            StatusCode::kUnauthenticated);
  MakeDevice(*rotated, "pi-1");
}

TEST_F(FleetStoreTest, DeploysBySelectorAndRollsBack) {
  const std::string a = MakeLocation("plant-a");
  const std::string b = MakeLocation("plant-b");
  MakeDevice(a, "a1", {{"camera", "yes"}});
  MakeDevice(a, "a2");
  MakeDevice(b, "b1", {{"camera", "yes"}});

  DeploymentSpec spec{
      .name = "detector",
      .reference = "hub/m:1",
      .selector = {.location = "plant-a", .labels = {}, .architecture = "", .device = ""},
      .rollout = {}};
  ASSERT_TRUE(store_->Deploy(spec, true).ok());
  EXPECT_EQ(store_->Deploy(spec, true).status().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(References("a1"), std::vector<std::string>{"hub/m:1"});
  EXPECT_EQ(References("a2"), std::vector<std::string>{"hub/m:1"});
  EXPECT_TRUE(References("b1").empty());

  spec.reference = "hub/m:2";
  spec.selector.labels = {{"camera", "yes"}};
  auto updated = store_->Deploy(spec, false);
  ASSERT_TRUE(updated.ok());
  EXPECT_EQ(updated->revisions.size(), 2u);
  EXPECT_EQ(References("a1"), std::vector<std::string>{"hub/m:2"});
  EXPECT_TRUE(References("a2").empty());
  // Deploying the same again adds no revision.
  EXPECT_EQ(store_->Deploy(spec, false)->revisions.size(), 2u);

  auto rolled_back = store_->Rollback("detector");
  ASSERT_TRUE(rolled_back.ok());
  EXPECT_EQ(rolled_back->Current()->number, 1);
  EXPECT_EQ(References("a2"), std::vector<std::string>{"hub/m:1"});
  EXPECT_EQ(store_->Rollback("detector").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Rollback("nope").status().code(), StatusCode::kNotFound);

  EXPECT_EQ(store_->CountMatching({.location = "plant-c"}), 0u);
  EXPECT_EQ(store_->CountMatching({.labels = {{"camera", "yes"}}}), 2u);
}

TEST_F(FleetStoreTest, EverythingSurvivesAReopen) {
  const std::string enrolment = MakeLocation("plant-a");
  const std::string token = MakeDevice(enrolment, "a1", {{"zone", "north"}});
  ASSERT_TRUE(store_->Deploy({.name = "d", .reference = "hub/m:1"}, true).ok());
  ASSERT_TRUE(store_->Deploy({.name = "d", .reference = "hub/m:2"}, false).ok());
  ASSERT_TRUE(store_->Rollback("d").ok());
  ReportReady("a1", "hub/m:1");
  const std::string etag = store_->DesiredStateFor("a1")->etag;

  Reopen();
  auto device = store_->AuthenticateDevice(token);
  ASSERT_TRUE(device.ok());
  EXPECT_EQ(device->labels.at("zone"), "north");
  ASSERT_TRUE(device->heartbeat.has_value());
  EXPECT_EQ(device->heartbeat->models.at(0).reference, "hub/m:1");
  EXPECT_EQ(device->last_seen, 1000);
  EXPECT_EQ(store_->DesiredStateFor("a1")->etag, etag);
  EXPECT_EQ(References("a1"), std::vector<std::string>{"hub/m:1"});
  MakeDevice(enrolment, "a2");
}

TEST_F(FleetStoreTest, CanaryGoesToSomeFirstThenToAllOnceHealthy) {
  const std::string enrolment = MakeLocation("plant-a");
  for (int i = 0; i < 10; ++i) {
    MakeDevice(enrolment, "d" + std::to_string(i));
  }
  ASSERT_TRUE(store_->Deploy({.name = "m", .reference = "hub/m:1"}, true).ok());
  const Rollout canary{
      .strategy = RolloutStrategy::kCanary, .canary_percent = 20, .canary_healthy_seconds = 60};
  ASSERT_TRUE(store_->Deploy({.name = "m", .reference = "hub/m:2", .rollout = canary}, false).ok());

  std::vector<std::string> canaries;
  for (int i = 0; i < 10; ++i) {
    const std::string name = "d" + std::to_string(i);
    if (References(name) == std::vector<std::string>{"hub/m:2"}) {
      canaries.push_back(name);
    } else {
      EXPECT_EQ(References(name), std::vector<std::string>{"hub/m:1"});
    }
  }
  ASSERT_EQ(canaries.size(), 2u);

  ReportReady(canaries[0], "hub/m:2");
  clock_.Advance(std::chrono::seconds(120));
  ReportReady("d9" == canaries[0] ? "d8" : "d9", "hub/m:1");
  EXPECT_FALSE(store_->GetDeployment("m")->Current()->promoted) << "one canary is not ready yet";

  ReportReady(canaries[1], "hub/m:2");
  EXPECT_FALSE(store_->GetDeployment("m")->Current()->promoted) << "healthy, but not for 60 s";
  clock_.Advance(std::chrono::seconds(61));
  // Promoted from that moment on, as the API says, before any heartbeat records it.
  EXPECT_TRUE(store_->GetDeployment("m")->Current()->promoted);
  EXPECT_TRUE(store_->Deployments().front().Current()->promoted);
  ReportReady(canaries[0], "hub/m:2");
  EXPECT_TRUE(store_->GetDeployment("m")->Current()->promoted);
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(References("d" + std::to_string(i)), std::vector<std::string>{"hub/m:2"});
  }
}

TEST_F(FleetStoreTest, LongPollReturnsWhenTheDesiredStateChanges) {
  const std::string enrolment = MakeLocation("plant-a");
  MakeDevice(enrolment, "a1");
  const std::string etag = store_->DesiredStateFor("a1")->etag;

  const auto unchanged = store_->WaitForDesiredState("a1", etag, std::chrono::milliseconds(50));
  ASSERT_TRUE(unchanged.ok());
  EXPECT_EQ(unchanged->etag, etag);

  std::jthread deployer([this] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ASSERT_TRUE(store_->Deploy({.name = "d", .reference = "hub/m:1"}, true).ok());
  });
  const auto start = std::chrono::steady_clock::now();
  const auto changed = store_->WaitForDesiredState("a1", etag, std::chrono::seconds(10));
  ASSERT_TRUE(changed.ok());
  EXPECT_NE(changed->etag, etag);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_EQ(store_->WaitForDesiredState("nope", "", std::chrono::milliseconds(1)).status().code(),
            StatusCode::kNotFound);
}

TEST_F(FleetStoreTest, RefusesADamagedDatabase) {
  store_.reset();
  {
    auto db = SqliteDb::Open({.path = path_});
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE(
        (*db)->Exec("INSERT INTO locations VALUES ('x', '', 'not json', 'h', 0)", "damage").ok());
  }
  auto reopened = FleetStore::Open({.database = path_, .clock = {}});
  ASSERT_FALSE(reopened.ok());
  EXPECT_NE(reopened.status().message().find("damaged location x"), std::string::npos)
      << reopened.status().message();
}

}  // namespace
}  // namespace perch
