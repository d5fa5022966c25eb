#include "outbox/durable_queue.h"

#include <gtest/gtest.h>

#include <fstream>
#include <thread>

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
  DurableQueueOptions options;
  options.ttl = std::chrono::seconds(1);
  auto queue = Open(options);
  ASSERT_TRUE(queue->Append("t", "old", "old", "").ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  ASSERT_TRUE(queue->Append("t", "new", "new", "").ok());
  EXPECT_EQ(Payloads(*queue), (std::vector<std::string>{"new"}));
  EXPECT_EQ(queue->Size(), 1);
  EXPECT_NE(metrics_.RenderPrometheus().find("perch_queue_expired_total{queue=\"outbox\"} 1"),
            std::string::npos);
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

TEST_F(DurableQueueTest, PolicyNames) {
  EXPECT_EQ(OverflowPolicyFromString("drop-oldest"), OverflowPolicy::kDropOldest);
  EXPECT_EQ(ToString(OverflowPolicy::kRejectNew), "reject-new");
  EXPECT_FALSE(OverflowPolicyFromString("drop-newest").has_value());
  EXPECT_EQ(SyncModeFromString("full"), SyncMode::kFull);
}

}  // namespace
}  // namespace perch
