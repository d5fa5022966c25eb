// The lanes between the inbox and the outbox when the disk fills: an answer
// the outbox cannot store is stored again once there is room, and its
// request stays in the inbox until then, so an acknowledged request is never
// lost. The queues are real SQLite files behind the fault VFS; the broker
// link is a Connection that was never started (answers wait in the outbox).
#include "mqtt/request_lanes.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "core/files.h"
#include "mqtt/request_answer.h"
#include "testing/fake_engine.h"
#include "testing/fault_vfs.h"

namespace perch::mqtt {
namespace {

namespace fs = std::filesystem;
using perch::testing::FaultVfs;

const TopicLayout kLayout("perch", "lab", "d1");
constexpr auto kPatience = std::chrono::seconds(20);

class NoBroker : public ConnectionListener {
 public:
  void OnConnected(bool) override {}
  void OnConnectedChanged(bool) override {}
  void OnMessage(const IncomingMessage&) override {}
  void OnPublished(int, const Status&) override {}
  void OnTick() override {}
  std::string OfflineStatus() override { return "{}"; }
};

class RequestLanesTest : public ::testing::Test {
 protected:
  RequestLanesTest()
      : root_(fs::path(::testing::TempDir()) /
              ("perch-request-lanes-" + std::to_string(getpid()) + "-" +
               ::testing::UnitTest::GetInstance()->current_test_info()->name())),
        vfs_(FaultVfs::Register("perch-lanes-" + std::to_string(getpid()))) {
    fs::remove_all(root_);
    fs::create_directories(root_ / "models" / "fake" / "1");
    EXPECT_TRUE(
        WriteFileAtomically(root_ / "models" / "fake" / "1" / "model.onnx", "adds one").ok());
    engine_.SetModel("adds one", FakeModel{.add = 1});
    manager_ = std::make_unique<ModelManager>(ModelManagerOptions{.repository = root_ / "models"},
                                              engine_, metrics_, logger_);
    EXPECT_TRUE(manager_->LoadModel("fake").ok());
    scheduler_.Start();
    inference_ = std::make_unique<InferenceService>(*manager_, scheduler_);
    // Only the outbox's disk fills: the inbox could still let a request go.
    inbox_ = Open("inbox", 100, "");
    outbox_ = Open("outbox", 100, vfs_->name());
  }
  ~RequestLanesTest() override {
    scheduler_.Stop();
    inbox_.reset();
    outbox_.reset();
    manager_.reset();
    fs::remove_all(root_);
  }

  std::unique_ptr<DurableQueue> Open(const std::string& name, int64_t max_records,
                                     const std::string& vfs) {
    auto queue = DurableQueue::Open({.path = root_ / "state" / (name + ".db"),
                                     .name = name,
                                     .max_records = max_records,
                                     .overflow = OverflowPolicy::kRejectNew,
                                     .ttl = std::chrono::seconds(0),
                                     .sync = SyncMode::kFull,
                                     .vfs = vfs,
                                     .clock = {}},
                                    metrics_);
    EXPECT_TRUE(queue.ok()) << queue.status().message();
    return std::move(queue).value();
  }

  // A request for the fake model, accepted into the inbox as the network
  // thread accepts one; what the lanes are handed.
  QueuedRecord Accept(int i) {
    const InboundRequest request{
        .topic = "perch/lab/d1/infer/fake",
        .model = "fake",
        .payload = R"({"id":"r)" + std::to_string(i) +
                   R"(","inputs":[{"name":"x","datatype":"FP32","shape":[1,2],"data":[1,2]}]})",
        .response_topic = "",
        .correlation = "",
        .stream_output = "",
    };
    const std::string key = "request-" + std::to_string(i);
    const std::string attributes = EncodeRequestAttributes(request);
    auto sequence = inbox_->Append(request.topic, key, request.payload, attributes);
    EXPECT_TRUE(sequence.ok()) << sequence.status().message();
    return QueuedRecord{.sequence = sequence.value(),
                        .destination = request.topic,
                        .key = key,
                        .payload = request.payload,
                        .attributes = attributes,
                        .created_unix_ms = 0};
  }

  // Polls `done` until it holds or the patience runs out (a failure).
  static bool Eventually(const std::function<bool()>& done) {
    const auto give_up = std::chrono::steady_clock::now() + kPatience;
    while (!done()) {
      if (std::chrono::steady_clock::now() > give_up) {
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return true;
  }

  const fs::path root_;
  const Logger logger_ = Logger::ToStderr(LogLevel::kWarn, "test");
  std::unique_ptr<FaultVfs> vfs_;
  FakeEngine engine_;
  MetricsRegistry metrics_;
  std::unique_ptr<ModelManager> manager_;
  Scheduler scheduler_{SchedulerOptions{.workers = 1}};
  std::unique_ptr<DurableQueue> inbox_;
  std::unique_ptr<DurableQueue> outbox_;
  NoBroker listener_;
  // Never started: answers wait in the outbox.
  Connection connection_{NoBrokerOptions(), listener_, metrics_, logger_};
  std::unique_ptr<InferenceService> inference_;

 private:
  static ConnectionOptions NoBrokerOptions() {
    ConnectionOptions options;
    options.address.host = "127.0.0.1";
    options.client_id = "d1";
    return options;
  }
};

TEST_F(RequestLanesTest, AFullDiskKeepsTheRequestUntilItsAnswerIsStored) {
  Delivery delivery(*outbox_, *inbox_, connection_, 8, metrics_, logger_);
  RequestLanes lanes(1, *inference_, kLayout, "d1", *inbox_, *outbox_, delivery, logger_);
  lanes.Start();

  std::vector<QueuedRecord> accepted;
  for (int i = 0; i < 3; ++i) {
    accepted.push_back(Accept(i));
  }
  vfs_->FailWrites(SQLITE_FULL);
  for (auto& record : accepted) {
    lanes.Dispatch(record);
  }
  // The lane answers the first request and cannot store the answer: every
  // request is still in the inbox.
  ASSERT_TRUE(Eventually([&] { return engine_.runs().started() >= 1; }));
  EXPECT_EQ(outbox_->Size(), 0);
  EXPECT_EQ(inbox_->Size(), 3);

  // Space returns: every answer is stored, in order, and only then does its
  // request leave the inbox.
  vfs_->FailWrites(0);
  ASSERT_TRUE(Eventually([&] { return outbox_->Size() == 3 && inbox_->Size() == 0; }))
      << "outbox " << outbox_->Size() << ", inbox " << inbox_->Size();
  auto answers = outbox_->Read(0, 10);
  ASSERT_TRUE(answers.ok());
  ASSERT_EQ(answers->size(), 3u);
  for (size_t i = 0; i < answers->size(); ++i) {
    EXPECT_EQ((*answers)[i].key, "d1/request-" + std::to_string(i));
    EXPECT_NE((*answers)[i].payload.find("\"id\":\"r" + std::to_string(i) + "\""),
              std::string::npos)
        << (*answers)[i].payload;
  }
  lanes.Stop();
}

// The answer is published before its disk flush; when that flush fails the
// answer is stored again (a repeat, same key) and the request stays in the
// inbox until one holds.
TEST_F(RequestLanesTest, AnAnswerWhoseFlushFailsIsStoredAgainBeforeTheRequestLeaves) {
  Delivery delivery(*outbox_, *inbox_, connection_, 8, metrics_, logger_);
  RequestLanes lanes(1, *inference_, kLayout, "d1", *inbox_, *outbox_, delivery, logger_);
  lanes.Start();
  vfs_->FailSyncs(true);
  lanes.Dispatch(Accept(0));
  // Written, not flushed: the request stays.
  ASSERT_TRUE(Eventually([&] { return outbox_->Size() >= 1; }));
  EXPECT_EQ(inbox_->Size(), 1);

  vfs_->FailSyncs(false);
  ASSERT_TRUE(Eventually([&] { return inbox_->Size() == 0; }));
  auto answers = outbox_->Read(0, 10);
  ASSERT_TRUE(answers.ok());
  ASSERT_FALSE(answers->empty());
  for (const QueuedRecord& answer : *answers) {
    EXPECT_EQ(answer.key, "d1/request-0");
  }
  lanes.Stop();
}

TEST_F(RequestLanesTest, AStopDuringAFullDiskLeavesTheRequestForTheNextStart) {
  Delivery delivery(*outbox_, *inbox_, connection_, 8, metrics_, logger_);
  {
    RequestLanes lanes(1, *inference_, kLayout, "d1", *inbox_, *outbox_, delivery, logger_);
    lanes.Start();
    const QueuedRecord record = Accept(0);
    vfs_->FailWrites(SQLITE_FULL);
    lanes.Dispatch(record);
    ASSERT_TRUE(Eventually([&] { return engine_.runs().started() >= 1; }));
    lanes.Stop();
  }
  vfs_->FailWrites(0);
  EXPECT_EQ(inbox_->Size(), 1);
  EXPECT_EQ(outbox_->Size(), 0);

  // The next start answers it.
  RequestLanes lanes(1, *inference_, kLayout, "d1", *inbox_, *outbox_, delivery, logger_);
  lanes.Start();
  ASSERT_TRUE(lanes.ResumeInbox().ok());
  ASSERT_TRUE(Eventually([&] { return outbox_->Size() == 1 && inbox_->Size() == 0; }));
  lanes.Stop();
}

TEST_F(RequestLanesTest, AnOutboxThatRefusesByPolicyDropsTheAnswerAsDocumented) {
  outbox_ = Open("small-outbox", 1, "");
  Delivery delivery(*outbox_, *inbox_, connection_, 8, metrics_, logger_);
  RequestLanes lanes(1, *inference_, kLayout, "d1", *inbox_, *outbox_, delivery, logger_);
  lanes.Start();
  lanes.Dispatch(Accept(0));
  lanes.Dispatch(Accept(1));
  // reject-new: the second answer is refused and counted, not retried.
  ASSERT_TRUE(Eventually([&] { return inbox_->Size() == 0; }));
  EXPECT_EQ(outbox_->Size(), 1);
  lanes.Stop();
}

}  // namespace
}  // namespace perch::mqtt
