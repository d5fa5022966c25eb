// FleetStore::Enrol repeated: the same agent (its enrolment key) is
// answered again; anyone else asking for a taken name is refused.
#include <gtest/gtest.h>

#include <string>

#include "core/clock.h"
#include "core/sqlite.h"
#include "fleet/fleet_store.h"
#include "fleet/old_database_testing.h"

namespace perch {
namespace {

namespace fs = std::filesystem;

const std::string kKey(64, 'a');
const std::string kOtherKey(64, 'b');

class FleetStoreEnrolTest : public testing::Test {
 protected:
  void SetUp() override {
    path_ = fs::path(testing::TempDir()) /
            (std::string("fleet_enrol_") +
             testing::UnitTest::GetInstance()->current_test_info()->name() + ".db");
    for (const char* suffix : {"", "-wal", "-shm"}) {
      fs::remove(path_.string() + suffix);
    }
    Reopen();
    auto created = store_->CreateLocation({.name = "plant-a"});
    ASSERT_TRUE(created.ok()) << created.status().message();
    enrolment_ = created->token;
  }

  void Reopen() {
    store_.reset();
    auto store = FleetStore::Open({.database = path_,
                                   .clock = clock_.AsWallClock(),
                                   .placement_review_interval = std::chrono::hours(1)});
    ASSERT_TRUE(store.ok()) << store.status().message();
    store_ = std::move(store).value();
  }

  Result<Enrolment> Enrol(const std::string& key, const std::string& name = "pi-1",
                          Labels labels = {}) {
    return store_->Enrol(enrolment_, {.name = name,
                                      .labels = std::move(labels),
                                      .architecture = "arm64",
                                      .perch_version = "0.1.0",
                                      .addresses = {},
                                      .facts = {},
                                      .enrolment_key = key});
  }

  fs::path path_;
  ManualClock clock_{WallClock::TimePoint(std::chrono::seconds(1000))};
  std::unique_ptr<FleetStore> store_;
  std::string enrolment_;
};

TEST_F(FleetStoreEnrolTest, TheSameKeyAnswersTheSameDeviceWithANewTokenThatReplacesTheOld) {
  auto first = Enrol(kKey, "pi-1", {{"camera", "yes"}});
  ASSERT_TRUE(first.ok()) << first.status().message();
  EXPECT_FALSE(first->again);
  ASSERT_TRUE(store_->Deploy({.name = "d", .reference = "hub/m:1", .replicas = 1}, false).ok());
  ASSERT_EQ(store_->GetDeployment("d")->placements.at(0).devices, std::vector<std::string>{"pi-1"});

  clock_.Advance(std::chrono::seconds(30));
  auto again = Enrol(kKey, "pi-1", {{"camera", "no"}});
  ASSERT_TRUE(again.ok()) << again.status().message();
  EXPECT_TRUE(again->again);
  EXPECT_EQ(again->value.name, "pi-1");
  EXPECT_EQ(again->value.location, "plant-a");
  EXPECT_EQ(again->value.enrolled_at, first->value.enrolled_at) << "the same device, not a new one";
  EXPECT_EQ(again->value.labels.at("camera"), "no") << "what the agent says now";
  EXPECT_NE(again->token, first->token);

  EXPECT_EQ(store_->AuthenticateDevice(first->token).status().code(), StatusCode::kUnauthenticated)
      << "the token of the lost answer must stop working";
  auto device = store_->AuthenticateDevice(again->token);
  ASSERT_TRUE(device.ok()) << device.status().message();
  EXPECT_EQ(device->name, "pi-1");
  EXPECT_EQ(store_->Devices().size(), 1u);
  EXPECT_EQ(store_->GetDeployment("d")->placements.at(0).devices, std::vector<std::string>{"pi-1"})
      << "its placements stay";
  EXPECT_EQ(store_->DesiredStateFor("pi-1")->models.size(), 1u);

  // Any number of times, and across a hub restart: the key's hash is stored.
  Reopen();
  auto third = Enrol(kKey);
  ASSERT_TRUE(third.ok()) << third.status().message();
  EXPECT_TRUE(third->again);
  EXPECT_EQ(store_->AuthenticateDevice(again->token).status().code(), StatusCode::kUnauthenticated);
  EXPECT_TRUE(store_->AuthenticateDevice(third->token).ok());
}

TEST_F(FleetStoreEnrolTest, AnotherKeyOrNoKeyIsRefusedAndTheDeviceKeepsItsToken) {
  auto first = Enrol(kKey);
  ASSERT_TRUE(first.ok()) << first.status().message();

  const auto other = Enrol(kOtherKey);
  ASSERT_EQ(other.status().code(), StatusCode::kAlreadyExists);
  EXPECT_NE(other.status().message().find("another agent"), std::string::npos)
      << other.status().message();
  EXPECT_NE(other.status().message().find("--device"), std::string::npos);
  EXPECT_NE(other.status().message().find("perch devices revoke pi-1"), std::string::npos);

  // An agent from before enrolment keys: refused, as it always was.
  EXPECT_EQ(Enrol("").status().code(), StatusCode::kAlreadyExists);

  EXPECT_TRUE(store_->AuthenticateDevice(first->token).ok()) << "the device was not disturbed";
  EXPECT_EQ(store_->Devices().size(), 1u);
}

TEST_F(FleetStoreEnrolTest, ADeviceEnrolledWithoutAKeyCannotBeClaimedByOne) {
  auto first = Enrol("");
  ASSERT_TRUE(first.ok()) << first.status().message();
  const auto claimed = Enrol(kKey);
  ASSERT_EQ(claimed.status().code(), StatusCode::kAlreadyExists);
  EXPECT_NE(claimed.status().message().find("sent no enrolment key"), std::string::npos)
      << claimed.status().message();
  EXPECT_TRUE(store_->AuthenticateDevice(first->token).ok());
}

TEST_F(FleetStoreEnrolTest, ARevokedDeviceStaysRevoked) {
  ASSERT_TRUE(Enrol(kKey).ok());
  ASSERT_TRUE(store_->RevokeDevice("pi-1").ok());
  const auto again = Enrol(kKey);
  ASSERT_EQ(again.status().code(), StatusCode::kAlreadyExists);
  EXPECT_NE(again.status().message().find("revoked"), std::string::npos)
      << again.status().message();
  EXPECT_TRUE(store_->GetDevice("pi-1")->revoked);
  // The same agent under a new name is a new device.
  auto renamed = Enrol(kKey, "pi-2");
  ASSERT_TRUE(renamed.ok()) << renamed.status().message();
  EXPECT_FALSE(renamed->again);
}

TEST_F(FleetStoreEnrolTest, TheKeyDoesNotMoveADeviceToAnotherLocation) {
  ASSERT_TRUE(Enrol(kKey).ok());
  auto other = store_->CreateLocation({.name = "plant-b"});
  ASSERT_TRUE(other.ok());
  const auto moved = store_->Enrol(other->token, {.name = "pi-1", .enrolment_key = kKey});
  ASSERT_EQ(moved.status().code(), StatusCode::kAlreadyExists);
  EXPECT_NE(moved.status().message().find("location 'plant-a'"), std::string::npos)
      << moved.status().message();
  EXPECT_EQ(store_->GetDevice("pi-1")->location, "plant-a");
}

TEST_F(FleetStoreEnrolTest, TheEnrolmentTokenIsCheckedFirst) {
  ASSERT_TRUE(Enrol(kKey).ok());
  EXPECT_EQ(store_->Enrol("not-the-token", {.name = "pi-1", .enrolment_key = kKey}).status().code(),
            StatusCode::kUnauthenticated);
}

TEST_F(FleetStoreEnrolTest, RefusesAMalformedKey) {
  for (const std::string& key : {std::string(31, 'a'), std::string(129, 'a'), std::string(64, ' '),
                                 std::string("a/b") + std::string(40, 'c')}) {
    EXPECT_EQ(Enrol(key).status().code(), StatusCode::kInvalidArgument) << key;
  }
  EXPECT_TRUE(store_->Devices().empty());
}

TEST_F(FleetStoreEnrolTest, OpensADatabaseFromBeforeEnrolmentKeys) {
  store_.reset();
  ASSERT_TRUE(
      WriteOldDatabase(path_,
                       "CREATE TABLE locations(name TEXT PRIMARY KEY, description TEXT NOT "
                       "NULL, labels TEXT NOT NULL, enrolment_hash TEXT NOT NULL, created_at "
                       "INTEGER NOT NULL);"
                       "CREATE TABLE devices(name TEXT PRIMARY KEY, location TEXT NOT NULL, "
                       "labels TEXT NOT NULL, architecture TEXT NOT NULL, perch_version TEXT "
                       "NOT NULL, addresses TEXT NOT NULL, token_hash TEXT NOT NULL, "
                       "enrolled_at INTEGER NOT NULL, last_seen INTEGER NOT NULL, revoked "
                       "INTEGER NOT NULL, heartbeat TEXT, revoked_at INTEGER NOT NULL "
                       "DEFAULT 0);"
                       "INSERT INTO locations VALUES ('plant-a', '', '{}', 'x', 5);"
                       "INSERT INTO devices VALUES ('old', 'plant-a', '{}', 'amd64', '0.1.0', "
                       "'[]', 'y', 5, 0, 0, NULL, 0)")
          .ok());
  Reopen();
  ASSERT_TRUE(store_);
  ASSERT_TRUE(store_->GetDevice("old").ok());
  auto token = store_->RotateEnrolmentToken("plant-a");
  ASSERT_TRUE(token.ok());
  enrolment_ = *token;
  EXPECT_EQ(Enrol(kKey, "old").status().code(), StatusCode::kAlreadyExists)
      << "enrolled without a key: nobody can claim it";
  ASSERT_TRUE(Enrol(kKey, "new").ok());
  Reopen();
  auto again = Enrol(kKey, "new");
  ASSERT_TRUE(again.ok()) << again.status().message();
  EXPECT_TRUE(again->again);
}

}  // namespace
}  // namespace perch
