// What the hub acknowledges survives a power loss of the hub: an enrolment's
// token, a location and its enrolment token, a deployment, a revocation
// (FleetStore::FlushAcknowledged). The database is opened through the fault
// VFS, which forgets every write not flushed when the power goes.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/clock.h"
#include "fleet/fleet_store.h"
#include "testing/fault_vfs.h"

namespace perch {
namespace {

namespace fs = std::filesystem;
using testing::FaultVfs;

class FleetStorePowerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string test = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    folder_ = fs::path(::testing::TempDir()) / ("fleet_power_" + test);
    fs::remove_all(folder_);
    fs::create_directories(folder_);
    vfs_ = FaultVfs::Register("perch-fleet-power-" + test);
    Open();
  }
  void TearDown() override {
    store_.reset();
    restarts_.clear();
    vfs_.reset();
    fs::remove_all(folder_);
  }

  void Open(const fs::path& folder, const std::string& vfs) {
    store_.reset();
    auto store = FleetStore::Open({.database = folder / "fleet.db",
                                   .clock = clock_.AsWallClock(),
                                   .placement_review_interval = std::chrono::hours(1),
                                   .vfs = vfs});
    ASSERT_TRUE(store.ok()) << store.status().message();
    store_ = std::move(store).value();
  }
  void Open() { Open(folder_, vfs_->name()); }

  // The hub's power goes now: it restarts on the files as the disk holds
  // them, with only what was flushed (a clean close would flush the rest),
  // through a fault VFS of their own.
  void PowerLossAndRestart() {
    const std::string n = std::to_string(restarts_.size() + 1);
    const fs::path after = folder_ / ("after-power-loss-" + n);
    ASSERT_TRUE(current_vfs().SnapshotDurable(after).ok());
    store_.reset();
    restarts_.push_back(FaultVfs::Register(vfs_->name() + "-restart-" + n));
    Open(after, restarts_.back()->name());
  }
  FaultVfs& current_vfs() { return restarts_.empty() ? *vfs_ : *restarts_.back(); }

  Result<Enrolment> Enrol(const std::string& enrolment_token, const std::string& name) {
    return store_->Enrol(enrolment_token, {.name = name,
                                           .labels = {},
                                           .architecture = "arm64",
                                           .perch_version = "0.1.0",
                                           .addresses = {},
                                           .facts = {},
                                           .enrolment_key = std::string(64, 'k')});
  }

  fs::path folder_;
  ManualClock clock_{WallClock::TimePoint(std::chrono::seconds(1000))};
  std::unique_ptr<FaultVfs> vfs_;
  std::vector<std::unique_ptr<FaultVfs>> restarts_;
  std::unique_ptr<FleetStore> store_;
};

TEST_F(FleetStorePowerTest, WhatTheHubAnsweredSurvivesAPowerLoss) {
  auto location = store_->CreateLocation({.name = "plant-a"});
  ASSERT_TRUE(location.ok()) << location.status().message();
  auto enrolled = Enrol(location->token, "pi-1");
  ASSERT_TRUE(enrolled.ok()) << enrolled.status().message();
  auto other = Enrol(location->token, "pi-2");
  ASSERT_TRUE(other.ok()) << other.status().message();
  ASSERT_TRUE(store_->Deploy({.name = "d", .reference = "hub/m:1", .replicas = 0}, false).ok());
  ASSERT_TRUE(store_->RevokeDevice("pi-2").ok());

  PowerLossAndRestart();

  EXPECT_TRUE(store_->GetLocation("plant-a").ok());
  const auto device = store_->AuthenticateDevice(enrolled->token);
  ASSERT_TRUE(device.ok()) << "the enrolled device's token was lost: " << device.status().message();
  EXPECT_EQ(device->name, "pi-1");
  EXPECT_EQ(store_->AuthenticateDevice(other->token).status().code(), StatusCode::kUnauthenticated)
      << "the revocation was lost";
  const auto deployment = store_->GetDeployment("d");
  ASSERT_TRUE(deployment.ok()) << deployment.status().message();
  EXPECT_EQ(deployment->revisions.size(), 1u);
  auto again = Enrol(location->token, "pi-3");
  EXPECT_TRUE(again.ok()) << "the location's enrolment token was lost: "
                          << again.status().message();
}

TEST_F(FleetStorePowerTest, AFailedFlushAnswersNothingMoreUntilTheHubRestarts) {
  auto location = store_->CreateLocation({.name = "plant-a"});
  ASSERT_TRUE(location.ok()) << location.status().message();
  auto before = Enrol(location->token, "pi-0");
  ASSERT_TRUE(before.ok()) << before.status().message();
  vfs_->FailSyncs(true);
  const auto refused = Enrol(location->token, "pi-1");
  ASSERT_FALSE(refused.ok()) << "a token the disk may not hold was handed out";
  EXPECT_EQ(refused.status().code(), StatusCode::kUnavailable) << refused.status().message();

  // The disk answers again, but the log may have a gap that later flushes
  // would not close: nothing more is answered until a restart.
  vfs_->FailSyncs(false);
  const auto still_refused = Enrol(location->token, "pi-1");
  ASSERT_FALSE(still_refused.ok());
  EXPECT_NE(still_refused.status().message().find("restart perch"), std::string::npos)
      << still_refused.status().message();
  EXPECT_EQ(store_->Health().code(), StatusCode::kUnavailable) << "the hub's /healthz says so";

  // Restarted on what the disk holds: what was answered is there, and the
  // agent that was refused enrols with its key.
  PowerLossAndRestart();
  EXPECT_TRUE(store_->Health().ok());
  EXPECT_TRUE(store_->AuthenticateDevice(before->token).ok());
  const auto enrolled = Enrol(location->token, "pi-1");
  ASSERT_TRUE(enrolled.ok()) << enrolled.status().message();
  PowerLossAndRestart();
  EXPECT_TRUE(store_->AuthenticateDevice(enrolled->token).ok());
}

}  // namespace
}  // namespace perch
