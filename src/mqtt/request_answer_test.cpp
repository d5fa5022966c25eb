// The request -> answer step without a broker: the real InferenceService,
// ModelManager, Scheduler and ONNX Runtime over the test models
// (tests/models/make_models.py, written into the build tree by CMake).
#include "mqtt/request_answer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/log.h"
#include "core/metrics.h"
#include "engine/engine.h"
#include "models/model_manager.h"
#include "models/scheduler.h"

namespace perch::mqtt {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const TopicLayout kLayout("perch", "lab", "d1");
const std::string kRowWiseTopic = "perch/lab/d1/infer/row_wise";

// row_wise: OUTPUT0 = INPUT0 * 2 + 1, OUTPUT1 = the sum of each row.
const std::string kGoodPayload =
    R"({"id":"r1","inputs":[{"name":"INPUT0","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]})";

void WriteFile(const fs::path& path, const std::string& text) { std::ofstream(path) << text; }

// A model repository of the test models' row_wise graph under two configs:
// "row_wise" as the test models serve it, and "queued", which holds one
// request at most and waits up to 10 s for a second to batch it with, even
// while idle, so a second concurrent request always finds its queue full.
// One per process: CTest runs the tests of this file in parallel processes.
fs::path MakeRepository() {
  const fs::path repository =
      fs::path(testing::TempDir()) / ("mqtt_request_answer_models_" + std::to_string(getpid()));
  fs::remove_all(repository);
  const fs::path model = fs::path(PERCH_TEST_MODELS) / "row_wise" / "1" / "model.onnx";
  for (const std::string name : {"row_wise", "queued"}) {
    fs::create_directories(repository / name / "1");
    fs::copy_file(model, repository / name / "1" / "model.onnx");
  }
  WriteFile(repository / "row_wise" / "model.json", R"({"max_batch_size": 8})");
  WriteFile(repository / "queued" / "model.json",
            R"({"max_batch_size": 2, "max_queue_size": 1,
                "dynamic_batching": {"max_queue_delay_us": 10000000, "wait_when_idle": true}})");
  return repository;
}

class RequestAnswerTest : public testing::Test {
 protected:
  void SetUp() override {
    // Throws (failing the test) when the test models are missing.
    repository_ = MakeRepository();
    auto engine = CreateOnnxEngine({.intra_op_threads = 1, .inter_op_threads = 1},
                                   Logger::ToStderr(LogLevel::kWarn, "test"));
    ASSERT_TRUE(engine.ok()) << engine.status().ToString();
    engine_ = std::move(engine).value();
    models_ = std::make_unique<ModelManager>(
        ModelManagerOptions{.repository = repository_, .poll_interval = {}}, *engine_, metrics_,
        Logger::ToStderr(LogLevel::kWarn, "test"));
    ASSERT_TRUE(models_->Start().ok());
    ASSERT_EQ(models_->ServedModels().size(), 2u) << "the test models did not load";
    scheduler_.Start();
    service_ = std::make_unique<InferenceService>(*models_, scheduler_);
  }
  void TearDown() override {
    scheduler_.Stop();
    if (models_) {
      models_->Stop();
    }
    std::error_code ignored;
    fs::remove_all(repository_, ignored);
  }

  static InboundRequest Request(const std::string& model, std::string payload) {
    return InboundRequest{.topic = "perch/lab/d1/infer/" + model,
                          .model = model,
                          .payload = std::move(payload),
                          .response_topic = {},
                          .correlation = {},
                          .stream_output = {}};
  }

  Answer Ask(const InboundRequest& request) { return AnswerRequest(request, *service_, kLayout); }

  fs::path repository_;
  std::unique_ptr<Engine> engine_;
  MetricsRegistry metrics_;
  std::unique_ptr<ModelManager> models_;
  Scheduler scheduler_{SchedulerOptions{.workers = 2}};
  std::unique_ptr<InferenceService> service_;
};

// The error body every perch API sends, with the MQTT correlation fields.
json ExpectError(const Answer& answer, StatusCode code, const std::string& model,
                 const std::string& topic) {
  EXPECT_EQ(answer.status.code(), code) << answer.status.ToString();
  const auto body = nlohmann::ordered_json::parse(answer.body);
  std::vector<std::string> keys;
  for (const auto& [key, value] : body.items()) {
    keys.push_back(key);
  }
  EXPECT_GE(keys.size(), 4u) << answer.body;
  EXPECT_EQ(keys.at(0), "error") << answer.body;
  EXPECT_EQ(keys.at(1), "code") << answer.body;
  EXPECT_EQ(body["error"], answer.status.message());
  EXPECT_FALSE(answer.status.message().empty());
  EXPECT_EQ(body["code"], std::string(ToString(code)));
  EXPECT_EQ(body["model_name"], model);
  EXPECT_EQ(body["topic"], topic);
  return json::parse(answer.body);
}

TEST_F(RequestAnswerTest, GoodRequestIsAnsweredOnTheResultsTopic) {
  const Answer answer = Ask(Request("row_wise", kGoodPayload));
  ASSERT_TRUE(answer.status.ok()) << answer.status.ToString();
  EXPECT_EQ(answer.destination, "perch/lab/d1/results/row_wise");
  EXPECT_TRUE(answer.correlation.empty());
  const json body = json::parse(answer.body);
  EXPECT_EQ(body["id"], "r1");
  EXPECT_EQ(body["model_name"], "row_wise");
  EXPECT_EQ(body["model_version"], "1");
  ASSERT_EQ(body["outputs"].size(), 2u);
  for (const auto& output : body["outputs"]) {
    if (output["name"] == "OUTPUT0") {
      EXPECT_EQ(output["data"], json::parse("[3.0, 5.0, 7.0, 9.0]"));
    } else {
      EXPECT_EQ(output["name"], "OUTPUT1");
      EXPECT_EQ(output["data"], json::parse("[10.0]"));
    }
  }
}

TEST_F(RequestAnswerTest, AnswerGoesToTheResponseTopicWithTheCorrelation) {
  InboundRequest request = Request("row_wise", kGoodPayload);
  request.response_topic = "replies/a";
  request.correlation = std::string("c\0\xff", 3);
  const Answer answer = Ask(request);
  ASSERT_TRUE(answer.status.ok()) << answer.status.ToString();
  EXPECT_EQ(answer.destination, "replies/a");
  EXPECT_EQ(answer.correlation, request.correlation);
}

TEST_F(RequestAnswerTest, AnswerGoesToReplyToInTheBody) {
  const Answer answer = Ask(Request(
      "row_wise",
      R"({"id":"r2","reply_to":"replies/b","inputs":[{"name":"INPUT0","datatype":"FP32","shape":[1,4],"data":[0,0,0,0]}]})"));
  ASSERT_TRUE(answer.status.ok()) << answer.status.ToString();
  EXPECT_EQ(answer.destination, "replies/b");
  EXPECT_EQ(json::parse(answer.body)["id"], "r2");
}

TEST_F(RequestAnswerTest, StreamAnswersGoToTheBindingsOutputTopic) {
  InboundRequest request = Request("row_wise", kGoodPayload);
  request.topic = "sensors/7/audio";
  request.stream_output = "line1/wakeword";
  EXPECT_EQ(Ask(request).destination, "line1/wakeword");
}

TEST_F(RequestAnswerTest, BadJsonIsInvalidArgumentOnTheErrorsTopic) {
  const Answer answer = Ask(Request("row_wise", R"({"inputs": [)"));
  EXPECT_EQ(answer.destination, "perch/lab/d1/errors");
  const json body = ExpectError(answer, StatusCode::kInvalidArgument, "row_wise", kRowWiseTopic);
  EXPECT_FALSE(body.contains("id"));
}

TEST_F(RequestAnswerTest, UnparsableRequestStillSaysWhereItsErrorGoes) {
  InboundRequest request =
      Request("row_wise", R"({"id":"bad-1","reply_to":"replies/c","inputs":"none"})");
  request.correlation = "corr";
  const Answer answer = Ask(request);
  EXPECT_EQ(answer.destination, "replies/c");
  EXPECT_EQ(answer.correlation, "corr");
  const json body = ExpectError(answer, StatusCode::kInvalidArgument, "row_wise", kRowWiseTopic);
  EXPECT_EQ(body["id"], "bad-1");
}

TEST_F(RequestAnswerTest, EmptyAndNonObjectPayloadsAreInvalidArgument) {
  for (const std::string payload : {"", "[1, 2]", "\xff\xfe{}", "null"}) {
    const Answer answer = Ask(Request("row_wise", payload));
    EXPECT_EQ(answer.destination, "perch/lab/d1/errors") << payload;
    ExpectError(answer, StatusCode::kInvalidArgument, "row_wise", kRowWiseTopic);
  }
}

TEST_F(RequestAnswerTest, InputsThatDoNotFitTheModelAreInvalidArgument) {
  const Answer answer = Ask(Request(
      "row_wise",
      R"({"id":"r3","inputs":[{"name":"INPUT0","datatype":"INT32","shape":[1,4],"data":[1,2,3,4]}]})"));
  const json body = ExpectError(answer, StatusCode::kInvalidArgument, "row_wise", kRowWiseTopic);
  EXPECT_NE(answer.status.message().find("INT32"), std::string::npos) << answer.status.message();
  EXPECT_EQ(body["id"], "r3");
}

TEST_F(RequestAnswerTest, UnknownModelIsNotFound) {
  const Answer answer = Ask(Request("nosuch", kGoodPayload));
  EXPECT_EQ(answer.destination, "perch/lab/d1/errors");
  const json body =
      ExpectError(answer, StatusCode::kNotFound, "nosuch", "perch/lab/d1/infer/nosuch");
  EXPECT_NE(answer.status.message().find("nosuch"), std::string::npos) << answer.status.message();
  EXPECT_EQ(body["id"], "r1");
}

TEST_F(RequestAnswerTest, FullQueueIsResourceExhausted) {
  // Two requests at once: the first to reach the queue waits there (for a
  // batch partner, up to 10 s), so the other finds the queue full whichever
  // it is. Stopping the scheduler then runs the waiting one.
  const std::string payload =
      R"({"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[1,4],"data":[1,1,1,1]}]})";
  std::promise<Answer> first_done;
  auto first_answer = first_done.get_future();
  std::promise<Answer> second_done;
  auto second_answer = second_done.get_future();
  std::jthread first([&] { first_done.set_value(Ask(Request("queued", payload))); });
  std::jthread second([&] { second_done.set_value(Ask(Request("queued", payload))); });

  // Whichever was refused answers at once; the other waits in the queue.
  const auto ready = [](std::future<Answer>& answer) {
    return answer.wait_for(std::chrono::milliseconds(1)) == std::future_status::ready;
  };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!ready(first_answer) && !ready(second_answer) &&
         std::chrono::steady_clock::now() < deadline) {
  }
  const bool first_refused = ready(first_answer);
  ASSERT_TRUE(first_refused || ready(second_answer)) << "neither request was refused within 5 s";
  auto& refused_future = first_refused ? first_answer : second_answer;
  auto& waiting_future = first_refused ? second_answer : first_answer;
  const Answer refused = refused_future.get();
  EXPECT_EQ(refused.destination, "perch/lab/d1/errors");
  ExpectError(refused, StatusCode::kResourceExhausted, "queued", "perch/lab/d1/infer/queued");
  EXPECT_NE(refused.status.message().find("max_queue_size"), std::string::npos)
      << refused.status.message();

  scheduler_.Stop();
  ASSERT_EQ(waiting_future.wait_for(std::chrono::seconds(5)), std::future_status::ready)
      << "the queued request was not run when the scheduler stopped";
  const Answer ran = waiting_future.get();
  EXPECT_TRUE(ran.status.ok()) << ran.status.ToString();
}

TEST_F(RequestAnswerTest, StoppedSchedulerIsUnavailable) {
  scheduler_.Stop();
  ExpectError(Ask(Request("row_wise", kGoodPayload)), StatusCode::kUnavailable, "row_wise",
              kRowWiseTopic);
}

TEST_F(RequestAnswerTest, ReplyTopicThatIsNotATopicGoesToTheErrorsTopic) {
  for (const std::string& reply :
       {std::string("a/+/b"), std::string("a/#"), std::string(70000, 'x')}) {
    InboundRequest request = Request("row_wise", kGoodPayload);
    request.response_topic = reply;
    const Answer answer = Ask(request);
    EXPECT_EQ(answer.destination, "perch/lab/d1/errors");
    const json body = ExpectError(answer, StatusCode::kInvalidArgument, "row_wise", kRowWiseTopic);
    EXPECT_EQ(body["id"], "r1");
  }
}

TEST(RequestRecordTest, AttributesKeepEveryPropertyThroughTheInbox) {
  const InboundRequest request{.topic = "sensors/7/audio",
                               .model = "row_wise",
                               .payload = "{}",
                               .response_topic = "replies/x",
                               .correlation = std::string("\0\x01\xff", 3),
                               .stream_output = "line1/wakeword"};
  const QueuedRecord record{.sequence = 5,
                            .destination = request.topic,
                            .key = "k",
                            .payload = request.payload,
                            .attributes = EncodeRequestAttributes(request),
                            .created_unix_ms = 0};
  const InboundRequest decoded = DecodeRequestRecord(record);
  EXPECT_EQ(decoded.topic, request.topic);
  EXPECT_EQ(decoded.model, request.model);
  EXPECT_EQ(decoded.payload, request.payload);
  EXPECT_EQ(decoded.response_topic, request.response_topic);
  EXPECT_EQ(decoded.correlation, request.correlation);
  EXPECT_EQ(decoded.stream_output, request.stream_output);
}

TEST(RequestRecordTest, DamagedAttributesLeaveTheTopicOfTheRecord) {
  for (const std::string attributes :
       {"", "not json", "[1]", R"({"topic": 5, "model": ["x"], "correlation": "zz"})"}) {
    const InboundRequest decoded = DecodeRequestRecord(QueuedRecord{.sequence = 1,
                                                                    .destination = "a/b",
                                                                    .key = "k",
                                                                    .payload = "{}",
                                                                    .attributes = attributes,
                                                                    .created_unix_ms = 0});
    EXPECT_EQ(decoded.topic, "a/b") << attributes;
    EXPECT_EQ(decoded.model, "") << attributes;
    EXPECT_EQ(decoded.correlation, "") << attributes;
  }
}

TEST(AnswerRecordTest, TheKeyIsTheFirstMemberAndTheCorrelationIsKept) {
  const Answer answer{.destination = "replies/x",
                      .body = R"({"id":"r1"})",
                      .correlation = std::string("\0\xff", 2),
                      .status = Status::Ok()};
  const QueuedRecord record = AnswerRecord(answer, "perch-lab-d1/abc");
  EXPECT_EQ(record.destination, "replies/x");
  EXPECT_EQ(record.key, "perch-lab-d1/abc");
  EXPECT_EQ(record.payload, R"({"idempotency_key":"perch-lab-d1/abc","id":"r1"})");
  EXPECT_EQ(CorrelationOf(record), answer.correlation);

  const QueuedRecord empty = AnswerRecord(
      Answer{.destination = "t", .body = "{}", .correlation = {}, .status = Status::Ok()}, "k\"");
  EXPECT_EQ(empty.payload, R"({"idempotency_key":"k\""})");
  EXPECT_EQ(CorrelationOf(empty), "");
}

TEST(ErrorBodyTest, InvalidUtf8StaysValidJson) {
  const std::string body = ErrorBody(InvalidArgument("bad \xff byte"), "m\xfe", "t", "id\xfd");
  const json parsed = json::parse(body);
  EXPECT_EQ(parsed["code"], "InvalidArgument");
  EXPECT_TRUE(parsed["error"].is_string());
  EXPECT_TRUE(parsed["id"].is_string());
}

}  // namespace
}  // namespace perch::mqtt
