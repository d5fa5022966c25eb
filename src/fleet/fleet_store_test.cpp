#include "fleet/fleet_store.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "core/clock.h"
#include "fleet/fleet_json.h"
#include "fleet/old_database_testing.h"

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
    // The review runs when a test calls it, not on the store's own timer.
    auto store = FleetStore::Open({.database = path_,
                                   .clock = clock_.AsWallClock(),
                                   .placement_grace = std::chrono::seconds(kGrace),
                                   .placement_review_interval = std::chrono::hours(1)});
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

  // A heartbeat reporting free memory (MiB) and load, serving nothing.
  void Beat(const std::string& device, int64_t memory_mib = 1024, double load = 0) {
    Heartbeat heartbeat;
    heartbeat.memory_available_bytes = memory_mib << 20;
    heartbeat.load = load;
    ASSERT_TRUE(store_->RecordHeartbeat(device, heartbeat).ok());
  }

  // The devices a deployment is placed on, over every location.
  std::vector<std::string> PlacedOn(const std::string& deployment) {
    auto found = store_->GetDeployment(deployment);
    EXPECT_TRUE(found.ok());
    std::vector<std::string> devices;
    for (const Placement& placement : found->placements) {
      devices.insert(devices.end(), placement.devices.begin(), placement.devices.end());
    }
    return devices;
  }

  Result<Deployment> DeployReplicas(const std::string& name, const std::string& reference,
                                    int64_t replicas, const std::string& location = "") {
    return store_->Deploy({.name = name,
                           .reference = reference,
                           .selector = {.location = location},
                           .rollout = {},
                           .replicas = replicas},
                          false);
  }

  static constexpr int64_t kGrace = 60;
  // The heartbeat of a device the location's peers can reach.
  void BeatWithPeerFacts(const std::string& device, const std::string& url) {
    Heartbeat heartbeat;
    heartbeat.models.push_back({.name = "ready-model",
                                .version = 1,
                                .reference = "r",
                                .digest = "",
                                .state = "READY",
                                .error = ""});
    heartbeat.models.push_back({.name = "loading-model",
                                .version = 1,
                                .reference = "r",
                                .digest = "",
                                .state = "LOADING",
                                .error = ""});
    heartbeat.advertise_url = url;
    heartbeat.grpc_address = "127.0.0.1:9001";
    heartbeat.blobs = {"sha256:" + std::string(64, 'a')};
    ASSERT_TRUE(store_->RecordHeartbeat(device, heartbeat).ok());
  }

  std::vector<std::string> PeerNames(const std::string& device) {
    auto peers = store_->PeersOf(device);
    EXPECT_TRUE(peers.ok()) << peers.status().message();
    std::vector<std::string> names;
    for (const LocationPeer& peer : peers->peers) {
      names.push_back(peer.device);
    }
    return names;
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

// The event log: each event at the time it happened, newest first, kept
// across a restart, at most the limit asked for.
TEST_F(FleetStoreTest, EventLogHasEnrolmentsRevocationsAndRollbacksWithTheirTimes) {
  const std::string enrolment = MakeLocation("plant-a");
  MakeDevice(enrolment, "a1");  // at 1000
  clock_.Advance(std::chrono::seconds(10));
  ASSERT_TRUE(store_->Deploy({.name = "d", .reference = "hub/m:1"}, true).ok());  // 1010
  clock_.Advance(std::chrono::seconds(10));
  ASSERT_TRUE(store_->Deploy({.name = "d", .reference = "hub/m:2"}, false).ok());  // 1020
  clock_.Advance(std::chrono::seconds(10));
  ASSERT_TRUE(store_->Rollback("d").ok());  // 1030
  clock_.Advance(std::chrono::seconds(10));
  ASSERT_TRUE(store_->RevokeDevice("a1").ok());  // 1040
  clock_.Advance(std::chrono::seconds(10));
  ASSERT_TRUE(store_->RevokeDevice("a1").ok());  // again: still revoked at 1040

  Reopen();
  EXPECT_EQ(store_->GetDevice("a1")->revoked_at, 1040);
  EXPECT_EQ(store_->GetDeployment("d")->revisions.at(1).rolled_back_at, 1030);
  const auto events = store_->Events(100);
  std::vector<std::string> seen;
  for (const FleetEvent& event : events) {
    seen.push_back(fmt::format("{} {} {} {} {}", event.at, event.kind, event.subject,
                               event.revision, event.detail));
  }
  EXPECT_EQ(seen, (std::vector<std::string>{
                      "1040 device-revoked a1 0 location plant-a",
                      "1030 rolled-back d 2 by an operator", "1020 deployed d 2 hub/m:2",
                      "1010 deployed d 1 hub/m:1", "1000 device-enrolled a1 0 location plant-a"}));
  EXPECT_EQ(store_->Events(2).size(), 2u);
  EXPECT_EQ(store_->Events(100000).size(), 5u);
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

// K models over M devices: each device ends with K * replicas / M of them,
// and each device's desired state is exactly what is placed on it.
TEST_F(FleetStoreTest, SpreadsSixModelsEvenlyOverThreeDevices) {
  const std::vector<std::pair<std::string, std::vector<int64_t>>> scenarios = {
      {"ones", {1, 1, 1, 1, 1, 1}},   // 6 placements: 2 each
      {"twos", {2, 2, 2, 2, 2, 2}},   // 12: 4 each
      {"mixed", {1, 2, 1, 2, 1, 2}},  // 9: 3 each
  };
  for (const auto& [location, replicas] : scenarios) {
    SCOPED_TRACE(location);
    const std::string enrolment = MakeLocation(location);
    std::vector<std::string> devices;
    for (int i = 0; i < 3; ++i) {
      devices.push_back(location + "-" + std::to_string(i));
      MakeDevice(enrolment, devices.back());
      // Different memory: without the count first, the roomiest would take all.
      Beat(devices.back(), 1024 * (i + 1));
    }
    std::map<std::string, std::vector<std::string>> models_of;
    int64_t total = 0;
    for (size_t m = 0; m < replicas.size(); ++m) {
      const std::string name = location + "-m" + std::to_string(m);
      const std::string reference = "hub/" + name + ":1";
      auto deployed = DeployReplicas(name, reference, replicas[m], location);
      ASSERT_TRUE(deployed.ok()) << deployed.status().message();
      ASSERT_EQ(deployed->placements.size(), 1u);
      EXPECT_EQ(deployed->placements[0].devices.size(), static_cast<size_t>(replicas[m]));
      EXPECT_TRUE(PlacementWarnings(*deployed).empty());
      for (const std::string& device : PlacedOn(name)) {
        models_of[device].push_back(reference);
      }
      total += replicas[m];
    }
    for (const std::string& device : devices) {
      EXPECT_EQ(static_cast<int64_t>(models_of[device].size()), total / 3) << device;
      std::vector<std::string> desired = References(device);
      std::sort(desired.begin(), desired.end());
      EXPECT_EQ(desired, models_of[device]) << device;
    }
  }
}

TEST_F(FleetStoreTest, PrefersTheDeviceWithMoreMemoryThenLessLoad) {
  const std::string enrolment = MakeLocation("plant-a");
  for (const char* name : {"a1", "a2", "a3"}) {
    MakeDevice(enrolment, name);
  }
  Beat("a1", 1000, 0.1);
  Beat("a2", 4000, 3.0);
  Beat("a3", 4000, 0.5);
  ASSERT_TRUE(DeployReplicas("big", "hub/big:1", 1).ok());
  EXPECT_EQ(PlacedOn("big"), std::vector<std::string>{"a3"});
  // a3 holds one now: the next goes to the next best of those holding none.
  ASSERT_TRUE(DeployReplicas("next", "hub/next:1", 1).ok());
  EXPECT_EQ(PlacedOn("next"), std::vector<std::string>{"a2"});
}

TEST_F(FleetStoreTest, PlacementsStayAcrossRevisionsAndRollbacks) {
  const std::string enrolment = MakeLocation("plant-a");
  for (const char* name : {"a1", "a2", "a3"}) {
    MakeDevice(enrolment, name);
    Beat(name);
  }
  ASSERT_TRUE(DeployReplicas("d", "hub/m:1", 1).ok());
  const std::vector<std::string> first = PlacedOn("d");
  ASSERT_EQ(first.size(), 1u);

  // The placed device now has the least memory of all: a new revision
  // stays on it all the same, and so does a rollback.
  Beat(first[0], 1);
  ASSERT_TRUE(DeployReplicas("d", "hub/m:2", 1).ok());
  EXPECT_EQ(PlacedOn("d"), first);
  EXPECT_EQ(References(first[0]), std::vector<std::string>{"hub/m:2"});
  ASSERT_TRUE(store_->Rollback("d").ok());
  EXPECT_EQ(PlacedOn("d"), first);
  EXPECT_EQ(References(first[0]), std::vector<std::string>{"hub/m:1"});

  // More replicas keep the one there is and add one; fewer keep one of them.
  ASSERT_TRUE(DeployReplicas("d", "hub/m:3", 2).ok());
  const std::vector<std::string> two = PlacedOn("d");
  ASSERT_EQ(two.size(), 2u);
  EXPECT_NE(std::find(two.begin(), two.end(), first[0]), two.end());
  ASSERT_TRUE(DeployReplicas("d", "hub/m:4", 1).ok());
  const std::vector<std::string> one = PlacedOn("d");
  ASSERT_EQ(one.size(), 1u);
  EXPECT_NE(std::find(two.begin(), two.end(), one[0]), two.end());
  for (const char* name : {"a1", "a2", "a3"}) {
    EXPECT_EQ(References(name).size(), name == one[0] ? 1u : 0u) << name;
  }

  // Back to every device, and placed afresh after that.
  ASSERT_TRUE(DeployReplicas("d", "hub/m:5", 0).ok());
  EXPECT_TRUE(store_->GetDeployment("d")->placements.empty());
  for (const char* name : {"a1", "a2", "a3"}) {
    EXPECT_EQ(References(name), std::vector<std::string>{"hub/m:5"});
  }
}

TEST_F(FleetStoreTest, ADeviceSilentPastTheGraceLosesItsPlacements) {
  const std::string enrolment = MakeLocation("plant-a");
  for (const char* name : {"a1", "a2", "a3"}) {
    MakeDevice(enrolment, name);
    Beat(name);
  }
  ASSERT_TRUE(DeployReplicas("one", "hub/one:1", 1).ok());
  ASSERT_TRUE(DeployReplicas("two", "hub/two:1", 2).ok());
  const std::string gone = PlacedOn("one")[0];
  std::vector<std::string> others;
  for (const char* name : {"a1", "a2", "a3"}) {
    if (name != gone) {
      others.push_back(name);
    }
  }
  const auto beat_others = [&] {
    for (const std::string& name : others) {
      Beat(name);
    }
  };

  // Silent for the whole grace (a reboot): nothing moves.
  clock_.Advance(std::chrono::seconds(kGrace));
  beat_others();
  ASSERT_TRUE(store_->ReviewPlacements().ok());
  EXPECT_EQ(PlacedOn("one"), std::vector<std::string>{gone});
  EXPECT_EQ(References(gone), std::vector<std::string>{"hub/one:1"});
  EXPECT_EQ(PlacedOn("two"), others) << "each device holds one first";

  // One second more: its models go to the others, on the next review.
  clock_.Advance(std::chrono::seconds(1));
  beat_others();
  EXPECT_NE(References(others[0]).size() + References(others[1]).size(), 3u)
      << "moved before the review";
  ASSERT_TRUE(store_->ReviewPlacements().ok());
  const std::vector<std::string> one = PlacedOn("one");
  ASSERT_EQ(one.size(), 1u);
  EXPECT_NE(one[0], gone);
  EXPECT_EQ(PlacedOn("two"), others);
  EXPECT_TRUE(References(gone).empty());
  EXPECT_EQ(References(others[0]).size() + References(others[1]).size(), 3u);

  // Back again: it takes nothing back (the placements are stable), and it
  // is the first choice for the next deployment.
  Beat(gone);
  EXPECT_TRUE(References(gone).empty());
  ASSERT_TRUE(DeployReplicas("three", "hub/three:1", 1).ok());
  EXPECT_EQ(PlacedOn("three"), std::vector<std::string>{gone});
}

TEST_F(FleetStoreTest, FewerDevicesThanReplicasTakeItAllAndWarn) {
  const std::string enrolment = MakeLocation("plant-a");
  MakeDevice(enrolment, "a1");
  auto deployed = DeployReplicas("d", "hub/m:1", 3);
  ASSERT_TRUE(deployed.ok());
  ASSERT_EQ(deployed->placements.size(), 1u);
  EXPECT_EQ(deployed->placements[0].devices, std::vector<std::string>{"a1"});
  ASSERT_EQ(PlacementWarnings(*deployed).size(), 1u);

  // Devices that enrol fill the location up to the replicas, no further.
  MakeDevice(enrolment, "a2");
  MakeDevice(enrolment, "a3");
  MakeDevice(enrolment, "a4");
  EXPECT_EQ(PlacedOn("d"), (std::vector<std::string>{"a1", "a2", "a3"}));
  EXPECT_TRUE(References("a4").empty());
  EXPECT_TRUE(PlacementWarnings(*store_->GetDeployment("d")).empty());

  // A revoked device's place goes to another at once.
  ASSERT_TRUE(store_->RevokeDevice("a2").ok());
  EXPECT_EQ(PlacedOn("d"), (std::vector<std::string>{"a1", "a3", "a4"}));

  EXPECT_EQ(DeployReplicas("d", "hub/m:1", -1).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(DeployReplicas("d", "hub/m:1", kMaxReplicas + 1).status().code(),
            StatusCode::kInvalidArgument);
}

TEST_F(FleetStoreTest, ReplicasPlaceInEveryMatchingLocation) {
  const std::string a = MakeLocation("plant-a");
  const std::string b = MakeLocation("plant-b");
  for (const char* name : {"a1", "a2", "a3"}) {
    MakeDevice(a, name);
  }
  MakeDevice(b, "b1");
  auto deployed = DeployReplicas("d", "hub/m:1", 2);
  ASSERT_TRUE(deployed.ok());
  ASSERT_EQ(deployed->placements.size(), 2u);
  EXPECT_EQ(deployed->placements[0].location, "plant-a");
  EXPECT_EQ(deployed->placements[0].devices.size(), 2u);
  EXPECT_EQ(deployed->placements[1].devices, std::vector<std::string>{"b1"});
  const auto warnings = PlacementWarnings(*deployed);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("plant-b"), std::string::npos) << warnings[0];
}

TEST_F(FleetStoreTest, ACanaryIsTakenAmongThePlacedDevices) {
  const std::string enrolment = MakeLocation("plant-a");
  for (int i = 0; i < 6; ++i) {
    MakeDevice(enrolment, "d" + std::to_string(i));
  }
  ASSERT_TRUE(DeployReplicas("m", "hub/m:1", 4).ok());
  const std::vector<std::string> placed = PlacedOn("m");
  ASSERT_EQ(placed.size(), 4u);
  ASSERT_TRUE(store_
                  ->Deploy({.name = "m",
                            .reference = "hub/m:2",
                            .selector = {},
                            .rollout = {.strategy = RolloutStrategy::kCanary,
                                        .canary_percent = 25,
                                        .canary_healthy_seconds = 10},
                            .replicas = 4},
                           false)
                  .ok());
  EXPECT_EQ(PlacedOn("m"), placed);
  std::vector<std::string> canaries;
  for (int i = 0; i < 6; ++i) {
    const std::string name = "d" + std::to_string(i);
    const auto references = References(name);
    if (std::find(placed.begin(), placed.end(), name) == placed.end()) {
      EXPECT_TRUE(references.empty()) << name;
    } else if (references == std::vector<std::string>{"hub/m:2"}) {
      canaries.push_back(name);
    } else {
      EXPECT_EQ(references, std::vector<std::string>{"hub/m:1"}) << name;
    }
  }
  ASSERT_EQ(canaries.size(), 1u) << "25% of the 4 placed devices, not of all 6";
  ReportReady(canaries[0], "hub/m:2");
  clock_.Advance(std::chrono::seconds(11));
  for (const std::string& name : placed) {
    EXPECT_EQ(References(name), std::vector<std::string>{"hub/m:2"}) << name;
  }
}

TEST_F(FleetStoreTest, PlacementsSurviveAReopenAndARestartDoesNotMoveThem) {
  const std::string enrolment = MakeLocation("plant-a");
  for (const char* name : {"a1", "a2", "a3"}) {
    MakeDevice(enrolment, name);
    Beat(name);
  }
  ASSERT_TRUE(DeployReplicas("d", "hub/m:1", 2).ok());
  const std::vector<std::string> placed = PlacedOn("d");
  const std::string etag = store_->DesiredStateFor(placed[0])->etag;

  // The hub was down for ten graces: on restart every device looks silent,
  // but the grace counts from the restart.
  clock_.Advance(std::chrono::seconds(10 * kGrace));
  Reopen();
  ASSERT_TRUE(store_->ReviewPlacements().ok());
  EXPECT_EQ(PlacedOn("d"), placed);
  EXPECT_EQ(store_->DesiredStateFor(placed[0])->etag, etag);
  EXPECT_EQ(store_->GetDeployment("d")->Current()->replicas, 2);

  // Only the devices that stay silent a grace after the restart lose them.
  clock_.Advance(std::chrono::seconds(kGrace + 1));
  Beat("a1");
  Beat("a2");
  Beat("a3");
  ASSERT_TRUE(store_->ReviewPlacements().ok());
  EXPECT_EQ(PlacedOn("d"), placed);
  clock_.Advance(std::chrono::seconds(kGrace + 1));
  Beat(placed[0]);
  ASSERT_TRUE(store_->ReviewPlacements().ok());
  const std::vector<std::string> moved = PlacedOn("d");
  ASSERT_EQ(moved.size(), 1u) << "only one device was heard from within the grace";
  EXPECT_EQ(moved[0], placed[0]);
}

TEST_F(FleetStoreTest, OpensADatabaseFromBeforeReplicas) {
  store_.reset();
  ASSERT_TRUE(
      WriteOldDatabase(path_,
                       "CREATE TABLE revisions(deployment TEXT NOT NULL, number INTEGER NOT "
                       "NULL, reference TEXT NOT NULL, selector TEXT NOT NULL, rollout TEXT "
                       "NOT NULL, created_at INTEGER NOT NULL, rolled_back INTEGER NOT NULL, "
                       "healthy_since INTEGER, promoted INTEGER NOT NULL, "
                       "PRIMARY KEY(deployment, number));"
                       "INSERT INTO revisions VALUES ('d', 1, 'hub/m:1', '{}', "
                       "'{\"strategy\":\"all-at-once\"}', 5, 0, NULL, 1)")
          .ok());
  Reopen();
  ASSERT_TRUE(store_);
  auto deployment = store_->GetDeployment("d");
  ASSERT_TRUE(deployment.ok()) << deployment.status().message();
  EXPECT_EQ(deployment->Current()->replicas, 0);
  ASSERT_TRUE(DeployReplicas("d", "hub/m:2", 2).ok());
  Reopen();
  EXPECT_EQ(store_->GetDeployment("d")->Current()->replicas, 2);
}

TEST_F(FleetStoreTest, ListsTheOtherOnlineDevicesOfTheLocation) {
  const std::string site = MakeLocation("site");
  const std::string far = MakeLocation("far");
  MakeDevice(site, "a");
  MakeDevice(site, "b");
  MakeDevice(site, "c");
  MakeDevice(far, "x");
  BeatWithPeerFacts("a", "http://a:8000");
  BeatWithPeerFacts("b", "http://b:8000");
  BeatWithPeerFacts("x", "http://x:8000");
  // c never sent a heartbeat: not online, not a peer.
  EXPECT_EQ(PeerNames("a"), std::vector<std::string>{"b"});
  auto peers = store_->PeersOf("a");
  ASSERT_TRUE(peers.ok());
  EXPECT_EQ(peers->location, "site");
  const LocationPeer& b = peers->peers.at(0);
  EXPECT_EQ(b.url, "http://b:8000");
  EXPECT_EQ(b.grpc_address, "127.0.0.1:9001");
  EXPECT_EQ(b.models, std::vector<std::string>{"ready-model"});
  EXPECT_EQ(b.blobs.size(), 1u);
  EXPECT_EQ(b.last_seen, 1000);
  EXPECT_TRUE(PeerNames("x").empty());

  // Silent past the online window: dropped; back with a heartbeat.
  clock_.Advance(std::chrono::seconds(31));
  BeatWithPeerFacts("a", "http://a:8000");
  EXPECT_TRUE(PeerNames("a").empty());
  BeatWithPeerFacts("b", "http://b:8000");
  EXPECT_EQ(PeerNames("a"), std::vector<std::string>{"b"});

  ASSERT_TRUE(store_->RevokeDevice("b").ok());
  EXPECT_TRUE(PeerNames("a").empty());
  EXPECT_EQ(store_->PeersOf("b").status().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(store_->PeersOf("nobody").status().code(), StatusCode::kNotFound);
}

TEST_F(FleetStoreTest, OnePeerTokenPerLocationKeptAcrossRestarts) {
  const std::string site = MakeLocation("site");
  const std::string far = MakeLocation("far");
  MakeDevice(site, "a");
  MakeDevice(site, "b");
  MakeDevice(far, "x");
  const std::string token = store_->PeersOf("a")->peer_token;
  EXPECT_GE(token.size(), 32u);
  EXPECT_EQ(store_->PeersOf("b")->peer_token, token);
  EXPECT_NE(store_->PeersOf("x")->peer_token, token);
  Reopen();
  EXPECT_EQ(store_->PeersOf("b")->peer_token, token);
}

TEST(FleetPeersJsonTest, HeartbeatAndPeersRoundTrip) {
  Heartbeat heartbeat;
  heartbeat.advertise_url = "http://10.0.0.1:8000";
  heartbeat.grpc_address = "10.0.0.1:8001";
  heartbeat.blobs = {"sha256:" + std::string(64, 'b')};
  auto parsed = ParseHeartbeat(ToJson(heartbeat));
  ASSERT_TRUE(parsed.ok()) << parsed.status().message();
  EXPECT_EQ(parsed->advertise_url, heartbeat.advertise_url);
  EXPECT_EQ(parsed->grpc_address, heartbeat.grpc_address);
  EXPECT_EQ(parsed->blobs, heartbeat.blobs);
  // An older agent's heartbeat has none of them.
  auto old = ParseHeartbeat(R"({"models": [], "errors": []})");
  ASSERT_TRUE(old.ok());
  EXPECT_TRUE(old->advertise_url.empty() && old->blobs.empty());
  EXPECT_EQ(ParseHeartbeat(R"({"blobs": "x"})").status().code(), StatusCode::kInvalidArgument);

  LocationPeers peers{.location = "site", .peer_token = "t", .peers = {}};
  LocationPeer peer;
  peer.device = "b";
  peer.url = "http://b:8000";
  peer.models = {"m"};
  peer.last_seen = 7;
  peers.peers.push_back(peer);
  auto round = ParseLocationPeers(ToJson(peers));
  ASSERT_TRUE(round.ok()) << round.status().message();
  EXPECT_EQ(round->location, "site");
  EXPECT_EQ(round->peer_token, "t");
  ASSERT_EQ(round->peers.size(), 1u);
  EXPECT_EQ(round->peers[0].device, "b");
  EXPECT_EQ(round->peers[0].models, std::vector<std::string>{"m"});
  EXPECT_EQ(round->peers[0].last_seen, 7);
  EXPECT_EQ(ParseLocationPeers(R"({"peers": [{"url": "x"}]})").status().code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace perch
