#include "outbox/durable_queue.h"

#include <gtest/gtest.h>

#include <fstream>

#include "core/clock.h"
#include "core/sqlite.h"

namespace perch {
namespace {

namespace fs = std::filesystem;

class DurableQueueTest : public testing::Test {
 protected:
  void SetUp() override {
    folder_ = fs::temp_directory_path() /
              ("perch_queue_test_" +
               std::string(testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(folder_);
  }
  void TearDown() override { fs::remove_all(folder_); }

  std::unique_ptr<DurableQueue> Open(DurableQueueOptions options = {}) {
    options.path = folder_ / "queue.db";
    auto queue = DurableQueue::Open(options, metrics_);
    EXPECT_TRUE(queue.ok()) << queue.status().message();
    return queue.ok() ? std::move(queue).value() : nullptr;
  }

  static DurableQueueOptions Limited(int64_t max_records, OverflowPolicy overflow) {
    DurableQueueOptions options;
    options.max_records = max_records;
    options.overflow = overflow;
    return options;
  }

  static std::vector<std::string> Payloads(DurableQueue& queue) {
    std::vector<std::string> payloads;
    for (const auto& record : queue.Read(0, 1000).value()) {
      payloads.push_back(record.payload);
    }
    return payloads;
  }

  fs::path folder_;
  MetricsRegistry metrics_;
};

TEST_F(DurableQueueTest, KeepsOrderAndFieldsAcrossReopen) {
  {
    auto queue = Open();
    ASSERT_TRUE(queue->Append("t/a", "k1", "one", "attr").ok());
    ASSERT_TRUE(queue->Append("t/b", "k2", std::string("t\0o", 3), "").ok());
  }
  auto queue = Open();
  EXPECT_EQ(queue->Size(), 2);
  const auto records = queue->Read(0, 10).value();
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0].destination, "t/a");
  EXPECT_EQ(records[0].key, "k1");
  EXPECT_EQ(records[0].attributes, "attr");
  EXPECT_EQ(records[1].payload, std::string("t\0o", 3));
  EXPECT_LT(records[0].sequence, records[1].sequence);
  EXPECT_EQ(queue->Read(records[0].sequence, 10).value().size(), 1u);
}

TEST_F(DurableQueueTest, AnUnsyncedRemovalIsCommittedAtOnce) {
  {
    auto queue = Open();
    const int64_t first = queue->Append("t", "k1", "one", "").value();
    ASSERT_TRUE(queue->Append("t", "k2", "two", "").ok());
    ASSERT_TRUE(queue->RemoveUnsynced({first}).ok());
    EXPECT_EQ(queue->Size(), 1);
    EXPECT_EQ(Payloads(*queue), std::vector<std::string>{"two"});
    EXPECT_TRUE(queue->Sync().ok());
    EXPECT_TRUE(queue->Sync().ok()) << "a second Sync with nothing to flush";
  }
  // Closed without Sync's flush mattering: the removal was committed.
  auto queue = Open();
  EXPECT_EQ(Payloads(*queue), std::vector<std::string>{"two"});
}

TEST_F(DurableQueueTest, SequencesAreNeverReused) {
  auto queue = Open();
  const int64_t first = queue->Append("t", "k", "a", "").value();
  ASSERT_TRUE(queue->Remove({first}).ok());
  const int64_t second = queue->Append("t", "k", "b", "").value();
  EXPECT_GT(second, first);
  EXPECT_EQ(queue->Size(), 1);
}

TEST_F(DurableQueueTest, RejectNewWhenFull) {
  auto queue = Open(Limited(2, OverflowPolicy::kRejectNew));
  ASSERT_TRUE(queue->Append("t", "1", "a", "").ok());
  ASSERT_TRUE(queue->Append("t", "2", "b", "").ok());
  const auto refused = queue->Append("t", "3", "c", "");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(Payloads(*queue), (std::vector<std::string>{"a", "b"}));
  EXPECT_NE(metrics_.RenderPrometheus().find("perch_queue_rejected_total{queue=\"outbox\"} 1"),
            std::string::npos);
}

TEST_F(DurableQueueTest, DropOldestWhenFull) {
  auto queue = Open(Limited(2, OverflowPolicy::kDropOldest));
  for (const char* payload : {"a", "b", "c"}) {
    ASSERT_TRUE(queue->Append("t", payload, payload, "").ok());
  }
  EXPECT_EQ(Payloads(*queue), (std::vector<std::string>{"b", "c"}));
  EXPECT_NE(metrics_.RenderPrometheus().find("perch_queue_dropped_total{queue=\"outbox\"} 1"),
            std::string::npos);
}

TEST_F(DurableQueueTest, ExpiredRecordsAreCountedNotRead) {
  ManualClock clock;
  DurableQueueOptions options;
  options.ttl = std::chrono::seconds(1);
  options.clock = clock.AsWallClock();
  auto queue = Open(options);
  ASSERT_TRUE(queue->Append("t", "old", "old", "").ok());
  EXPECT_EQ(queue->Read(0, 10).value()[0].created_unix_ms, clock.AsWallClock().UnixMillis());
  clock.Advance(std::chrono::seconds(1));
  ASSERT_TRUE(queue->Append("t", "new", "new", "").ok());
  // Exactly as old as its time-to-live: still deliverable.
  EXPECT_EQ(Payloads(*queue), (std::vector<std::string>{"old", "new"}));
  clock.Advance(std::chrono::milliseconds(1));
  EXPECT_EQ(Payloads(*queue), (std::vector<std::string>{"new"}));
  EXPECT_EQ(queue->Size(), 1);
  EXPECT_NE(metrics_.RenderPrometheus().find("perch_queue_expired_total{queue=\"outbox\"} 1"),
            std::string::npos);
}

TEST_F(DurableQueueTest, AClaimedRepeatIsRecognisedAcrossReopen) {
  const DeliveryClaim claim{.slot = 7, .fingerprint = 42, .may_repeat = true, .window = 20};
  {
    auto queue = Open();
    const auto first = queue->AppendClaimed("t", "k1", "a", "", claim).value();
    EXPECT_FALSE(first.repeat);
    EXPECT_GT(first.sequence, 0);
    ASSERT_TRUE(queue->Remove({first.sequence}).ok());
  }
  // Answered and gone from the queue, then delivered again after a restart.
  auto queue = Open();
  const auto again = queue->AppendClaimed("t", "k2", "a", "", claim).value();
  EXPECT_TRUE(again.repeat);
  EXPECT_EQ(again.key, "k1");
  EXPECT_EQ(again.sequence, 0);
  EXPECT_EQ(queue->Size(), 0);
  // Its acknowledgement may be lost too: it is still recognised.
  EXPECT_TRUE(queue->AppendClaimed("t", "k3", "a", "", claim).value().repeat);
}

TEST_F(DurableQueueTest, AClaimIsNotARepeatWhenAnythingDiffers) {
  auto queue = Open();
  const DeliveryClaim claim{.slot = 7, .fingerprint = 42, .may_repeat = true, .window = 20};
  ASSERT_FALSE(queue->AppendClaimed("t", "k1", "a", "", claim).value().repeat);
  // The sender said it is a first delivery.
  auto certain = claim;
  certain.may_repeat = false;
  EXPECT_FALSE(queue->AppendClaimed("t", "k2", "a", "", certain).value().repeat);
  // Another message under the same slot: the slot was acknowledged and reused.
  auto other = claim;
  other.fingerprint = 43;
  EXPECT_FALSE(queue->AppendClaimed("t", "k3", "b", "", other).value().repeat);
  // Another slot.
  auto elsewhere = other;
  elsewhere.slot = 8;
  EXPECT_FALSE(queue->AppendClaimed("t", "k4", "b", "", elsewhere).value().repeat);
  EXPECT_EQ(Payloads(*queue), (std::vector<std::string>{"a", "a", "b", "b"}));
}

TEST_F(DurableQueueTest, OnlyTheLastClaimsOfTheWindowCount) {
  auto queue = Open();
  const DeliveryClaim claim{.slot = 1, .fingerprint = 1, .may_repeat = true, .window = 3};
  ASSERT_FALSE(queue->AppendClaimed("t", "k1", "a", "", claim).value().repeat);
  for (int64_t slot = 2; slot <= 4; ++slot) {
    auto later = claim;
    later.slot = slot;
    later.fingerprint = 100 + static_cast<uint64_t>(slot);
    ASSERT_FALSE(queue->AppendClaimed("t", "k", "b", "", later).value().repeat);
  }
  // Three claims since: the sender cannot still be waiting for slot 1's.
  const auto late = queue->AppendClaimed("t", "k5", "a", "", claim).value();
  EXPECT_FALSE(late.repeat);
  EXPECT_EQ(late.key, "k5");
}

TEST_F(DurableQueueTest, ARefusedClaimedRecordLeavesNoClaim) {
  auto queue = Open(Limited(1, OverflowPolicy::kRejectNew));
  ASSERT_TRUE(queue->Append("t", "k0", "x", "").ok());
  const DeliveryClaim claim{.slot = 3, .fingerprint = 9, .may_repeat = true, .window = 20};
  const auto refused = queue->AppendClaimed("t", "k1", "a", "", claim);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(queue->Size(), 1);
  ASSERT_TRUE(queue->Remove({queue->Read(0, 1).value()[0].sequence}).ok());
  const auto accepted = queue->AppendClaimed("t", "k2", "a", "", claim).value();
  EXPECT_FALSE(accepted.repeat);
  EXPECT_EQ(Payloads(*queue), (std::vector<std::string>{"a"}));
}

TEST_F(DurableQueueTest, RefusesAFileThatIsNotAQueue) {
  fs::create_directories(folder_);
  std::ofstream(folder_ / "queue.db") << "this is not an SQLite database, just text of some length";
  DurableQueueOptions options;
  options.path = folder_ / "queue.db";
  const auto queue = DurableQueue::Open(options, metrics_);
  ASSERT_FALSE(queue.ok());
  EXPECT_EQ(queue.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(queue.status().message().find("queue.db"), std::string::npos);
}

// A one-hour time-to-live on a wall clock and a monotonic clock that the
// test moves apart, as a clock step does.
DurableQueueOptions OnClocks(ManualClock& wall, ManualClock& monotonic) {
  DurableQueueOptions options;
  options.ttl = std::chrono::hours(1);
  options.clock = wall.AsWallClock();
  options.monotonic = [&monotonic] {
    return std::chrono::steady_clock::time_point(monotonic.Now().time_since_epoch());
  };
  return options;
}

// A device without a real-time clock boots in 1970 and steps to the right
// time when NTP answers: a record stamped before the step is as old as the
// time that really passed (the monotonic clock), not 56 years.
TEST_F(DurableQueueTest, AClockThatJumpsForwardExpiresNothingEarly) {
  ManualClock wall(WallClock::TimePoint(std::chrono::hours(24)));  // 2 January 1970
  ManualClock monotonic;
  auto queue = Open(OnClocks(wall, monotonic));
  ASSERT_TRUE(queue->Append("t", "k1", "booted in 1970", "").ok());
  monotonic.Advance(std::chrono::minutes(10));
  wall.Set(WallClock::TimePoint(std::chrono::seconds(1'790'000'000)));  // 2026: NTP answered
  EXPECT_EQ(Payloads(*queue), (std::vector<std::string>{"booted in 1970"}));
  const int64_t stamped = queue->Read(0, 10).value()[0].created_unix_ms;
  EXPECT_EQ(stamped, wall.AsWallClock().UnixMillis() - 10 * 60 * 1000) << "stamp not corrected";
  EXPECT_NE(metrics_.RenderPrometheus().find("perch_queue_clock_jumps_total{queue=\"outbox\"} 1"),
            std::string::npos);
  // Its real age, not the jump, expires it.
  monotonic.Advance(std::chrono::minutes(51));
  wall.Advance(std::chrono::minutes(51));
  EXPECT_TRUE(Payloads(*queue).empty());
}

// A clock years ahead stepped back: a record stamped in the future would
// otherwise never reach its time-to-live in this life of the device.
TEST_F(DurableQueueTest, AClockThatJumpsBackKeepsNothingForever) {
  ManualClock wall(WallClock::TimePoint(std::chrono::seconds(1'950'000'000)));  // 2031
  ManualClock monotonic;
  auto queue = Open(OnClocks(wall, monotonic));
  ASSERT_TRUE(queue->Append("t", "k1", "stamped in 2031", "").ok());
  monotonic.Advance(std::chrono::seconds(30));
  wall.Set(WallClock::TimePoint(std::chrono::seconds(1'790'000'000)));
  ASSERT_TRUE(queue->Append("t", "k2", "stamped in 2026", "").ok());
  EXPECT_EQ(Payloads(*queue).size(), 2u);
  monotonic.Advance(std::chrono::minutes(60));
  wall.Advance(std::chrono::minutes(60));
  // k1 is now 60.5 minutes old, k2 exactly 60: only k1 expires.
  EXPECT_EQ(Payloads(*queue), (std::vector<std::string>{"stamped in 2026"}));
}

// Drift and small NTP slews are not jumps.
TEST_F(DurableQueueTest, SmallClockStepsLeaveStampsAlone) {
  ManualClock wall;
  ManualClock monotonic;
  auto queue = Open(OnClocks(wall, monotonic));
  ASSERT_TRUE(queue->Append("t", "k1", "one", "").ok());
  const int64_t stamped = queue->Read(0, 10).value()[0].created_unix_ms;
  wall.Advance(std::chrono::milliseconds(1500));
  EXPECT_EQ(queue->Read(0, 10).value()[0].created_unix_ms, stamped);
}

TEST_F(DurableQueueTest, RecordsNeverExpireWithoutATimeToLive) {
  ManualClock clock;
  DurableQueueOptions options;
  options.clock = clock.AsWallClock();
  auto queue = Open(options);
  ASSERT_TRUE(queue->Append("t", "k", "kept", "").ok());
  clock.Advance(std::chrono::hours(24 * 365));
  EXPECT_EQ(Payloads(*queue), (std::vector<std::string>{"kept"}));
}

TEST_F(DurableQueueTest, RefusesADatabaseWithOtherTablesOfTheSameNames) {
  fs::create_directories(folder_);
  {
    MetricsRegistry other;
    DurableQueueOptions options;
    options.path = folder_ / "queue.db";
    ASSERT_TRUE(DurableQueue::Open(options, other).ok());
  }
  // Another program's "records" table: the queue must not write into it.
  {
    auto db = SqliteDb::Open({.path = folder_ / "queue.db"});
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE(
        (*db)->Exec("DROP TABLE records; CREATE TABLE records(id INTEGER)", "replace").ok());
  }
  DurableQueueOptions options;
  options.path = folder_ / "queue.db";
  const auto queue = DurableQueue::Open(options, metrics_);
  ASSERT_FALSE(queue.ok());
  EXPECT_EQ(queue.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(queue.status().message().find("queue.db"), std::string::npos);
}

TEST_F(DurableQueueTest, PolicyNames) {
  EXPECT_EQ(OverflowPolicyFromString("drop-oldest"), OverflowPolicy::kDropOldest);
  EXPECT_EQ(ToString(OverflowPolicy::kRejectNew), "reject-new");
  EXPECT_FALSE(OverflowPolicyFromString("drop-newest").has_value());
  EXPECT_EQ(SyncModeFromString("full"), SyncMode::kFull);
}

}  // namespace
}  // namespace perch
