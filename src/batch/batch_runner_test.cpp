#include "batch/batch_runner.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <sstream>
#include <streambuf>

#include "core/files.h"
#include "testing/fake_engine.h"

namespace perch {
namespace {

namespace fs = std::filesystem;

// A request line for the fake model: x FP32 [rows, 2], every element `value`.
std::string Line(float value, int rows = 1, const std::string& id = "") {
  std::string data;
  for (int i = 0; i < rows * 2; ++i) {
    data += (i ? "," : "") + std::to_string(value);
  }
  return (id.empty() ? std::string("{") : "{\"id\":\"" + id + "\",") +
         R"("inputs":[{"name":"x","datatype":"FP32","shape":[)" + std::to_string(rows) +
         R"(,2],"data":[)" + data + "]}]}";
}

std::vector<std::string> LinesOf(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    lines.push_back(line);
  }
  return lines;
}

// A stream that refuses every byte, as a full disk does.
class FullDisk : public std::streambuf {
 protected:
  int_type overflow(int_type) override { return traits_type::eof(); }
  std::streamsize xsputn(const char*, std::streamsize) override { return 0; }
};

class BatchRunnerTest : public ::testing::Test {
 protected:
  BatchRunnerTest()
      : root_(fs::path(::testing::TempDir()) /
              ("perch-batch-runner-" + std::to_string(getpid()) + "-" +
               ::testing::UnitTest::GetInstance()->current_test_info()->name())) {
    fs::remove_all(root_);
    fs::create_directories(root_ / "fake" / "1");
    EXPECT_TRUE(WriteFileAtomically(root_ / "fake" / "1" / "model.onnx", "adds one").ok());
    // Engine runs at once are bounded by the model's instances, as online.
    EXPECT_TRUE(WriteFileAtomically(root_ / "fake" / "model.json", R"({"instances": 4})").ok());
    engine_.SetModel("adds one", FakeModel{.add = 1});
    manager_ = std::make_unique<ModelManager>(ModelManagerOptions{.repository = root_}, engine_,
                                              metrics_, Logger::ToStderr(LogLevel::kWarn, "t"));
    EXPECT_TRUE(manager_->LoadModel("fake").ok());
    model_ = manager_->Acquire("fake", "").value();
    scheduler_.Start();
  }
  ~BatchRunnerTest() override {
    scheduler_.Stop();
    manager_.reset();
    fs::remove_all(root_);
  }

  Result<BatchCounts> Run(const std::string& input, std::ostream& out, BatchOptions options) {
    const InferenceService inference(*manager_, scheduler_);
    const BatchRunner runner(inference, model_, {"fake", 1, "sha256:ab"}, options);
    std::istringstream in(input);
    return runner.RunJsonLines(in, out);
  }

  const fs::path root_;
  FakeEngine engine_;
  MetricsRegistry metrics_;
  std::unique_ptr<ModelManager> manager_;
  std::shared_ptr<LoadedModel> model_;
  Scheduler scheduler_{SchedulerOptions{.workers = 4}};
};

TEST_F(BatchRunnerTest, ConcurrentGroupsAreWrittenInInputOrder) {
  engine_.runs().SetLatency(std::chrono::microseconds(200));
  std::string input;
  for (int i = 0; i < 200; ++i) {
    input += Line(static_cast<float>(i)) + "\n";
  }
  std::ostringstream out;
  const auto counts = Run(input, out, {.concurrency = 8});
  ASSERT_TRUE(counts.ok()) << counts.status().message();
  EXPECT_EQ(counts->records, 200);
  const auto lines = LinesOf(out.str());
  ASSERT_EQ(lines.size(), 200u);
  for (int i = 0; i < 200; ++i) {
    // y = x + 1, and the id is the line number.
    EXPECT_NE(lines[static_cast<size_t>(i)].find("\"id\":\"" + std::to_string(i + 1) + "\""),
              std::string::npos);
    EXPECT_NE(lines[static_cast<size_t>(i)].find("\"data\":[" + std::to_string(i + 1) + "," +
                                                 std::to_string(i + 1) + "]"),
              std::string::npos)
        << lines[static_cast<size_t>(i)];
  }
  EXPECT_GT(engine_.runs().max_concurrent(), 1);
}

TEST_F(BatchRunnerTest, MaxBatchMergesLinesAndSplitsTheAnswers) {
  const std::string input =
      Line(1) + "\n" + Line(2, 2, "two") + "\n" + Line(3) + "\n" + Line(4) + "\n" + Line(5) + "\n";
  std::ostringstream out;
  ASSERT_TRUE(Run(input, out, {.concurrency = 1, .max_batch = 4}).ok());
  EXPECT_EQ(engine_.runs().batch_rows(), (std::vector<int64_t>{5, 1}));
  const auto lines = LinesOf(out.str());
  ASSERT_EQ(lines.size(), 5u);
  EXPECT_NE(
      lines[1].find(
          R"("id":"two","parameters":{"perch.digest":"sha256:ab"},"outputs":[{"name":"y","datatype":"FP32","shape":[2,2],"data":[3,3,3,3]})"),
      std::string::npos)
      << lines[1];
  EXPECT_NE(lines[4].find(R"("data":[6,6])"), std::string::npos) << lines[4];
}

TEST_F(BatchRunnerTest, OnlyLinesWithEqualParametersAreMerged) {
  // The request's parameters are the model's (a pipeline's stream): lines
  // of different streams never share an engine call.
  const auto with_stream = [](float value, const std::string& stream) {
    return R"({"parameters":{"stream_id":")" + stream + R"("},)" + Line(value).substr(1);
  };
  const std::string input = with_stream(1, "a") + "\n" + with_stream(2, "a") + "\n" +
                            with_stream(3, "b") + "\n" + with_stream(4, "a") + "\n" + Line(5) +
                            "\n";
  std::ostringstream out;
  ASSERT_TRUE(Run(input, out, {.concurrency = 1, .max_batch = 8}).ok());
  EXPECT_EQ(engine_.runs().batch_rows(), (std::vector<int64_t>{2, 1, 1, 1}));
  const auto lines = LinesOf(out.str());
  ASSERT_EQ(lines.size(), 5u);
  EXPECT_NE(lines[3].find(R"("data":[5,5])"), std::string::npos) << lines[3];
}

TEST_F(BatchRunnerTest, ARefusedLineInAMergedGroupFailsAlone) {
  const std::string wrong =
      R"({"id":"wrong","inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,2,3]}]})";
  const std::string input = Line(1) + "\n" + wrong + "\n" + Line(3) + "\nnot json\n";
  std::ostringstream out;
  const auto counts = Run(input, out, {.concurrency = 2, .max_batch = 8});
  ASSERT_TRUE(counts.ok());
  EXPECT_EQ(counts->records, 4);
  EXPECT_EQ(counts->errors, 2);
  const auto lines = LinesOf(out.str());
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_TRUE(lines[1].starts_with(R"({"id":"wrong","error":)")) << lines[1];
  EXPECT_TRUE(lines[3].starts_with(R"({"id":"4","error":)")) << lines[3];
  EXPECT_TRUE(BatchRunner::IsErrorRecord(lines[3]));
  EXPECT_FALSE(BatchRunner::IsErrorRecord(lines[2]));
  EXPECT_NE(lines[2].find(R"("parameters":{"perch.digest":"sha256:ab"})"), std::string::npos);
}

TEST_F(BatchRunnerTest, AnOutputThatCannotBeWrittenStopsTheJob) {
  FullDisk full;
  std::ostream out(&full);
  const auto counts = Run(Line(1) + "\n" + Line(2) + "\n", out, {.concurrency = 2});
  EXPECT_EQ(counts.status().code(), StatusCode::kInternal);
}

}  // namespace
}  // namespace perch
