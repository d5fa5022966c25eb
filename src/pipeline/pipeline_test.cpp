#include "pipeline/pipeline.h"

#include <gtest/gtest.h>

#include <future>
#include <map>

#include "testing/fake_engine.h"

namespace perch {
namespace {

Tensor Floats(std::string name, Shape shape, std::vector<float> values) {
  Tensor tensor{
      .name = std::move(name), .datatype = DataType::kFp32, .shape = std::move(shape), .data = {}};
  for (float value : values) {
    AppendElement<float>(tensor.data, value);
  }
  return tensor;
}

InferParameters StreamId(std::string_view id) {
  return InferParameters{{"stream_id", std::string(id)}};
}

RunContext WithParameters(InferParameters parameters) {
  return RunContext{.deadline = std::nullopt, .parameters = std::move(parameters)};
}

std::vector<float> Values(const Tensor& tensor) {
  std::vector<float> values;
  for (size_t i = 0; i < tensor.data.size() / sizeof(float); ++i) {
    values.push_back(ReadElement<float>(tensor.data, i));
  }
  return values;
}

class PipelineTest : public ::testing::Test {
 protected:
  // Serves fake models "plus1" (y = x + 1) and "plus2" (y = x + 2), x FP32 [-1, 2].
  PipelineTest() { Serve(false); }

  // Serves "plus1" and "plus2" anew as models that compute in perch, or as
  // models that wait on another process (process models).
  void Serve(bool waiting) {
    for (const auto& [name, add] : {std::pair{"plus1", 1.0F}, std::pair{"plus2", 2.0F}}) {
      models_[name] = std::make_shared<LoadedModel>(
          name, 1, ModelConfig{}, FakeSignature(),
          std::make_unique<FakeSession>(FakeModel{.add = add, .waits_on_another_process = waiting},
                                        runs_),
          metrics_);
    }
  }

  StepModels Steps() {
    return [this](std::string_view name, std::string_view) -> Result<std::shared_ptr<LoadedModel>> {
      const auto found = models_.find(std::string(name));
      if (found == models_.end()) {
        return NotFound(fmt::format("model '{}' is not in the repository", name));
      }
      return found->second;
    };
  }

  Result<std::unique_ptr<Session>> Load(const std::string& json) {
    return LoadPipeline("p", json, Steps(), metrics_,
                        PipelineOptions{.now = [this] { return now_; }});
  }

  std::map<std::string, std::vector<float>> Run(Session& session, std::vector<Tensor> inputs,
                                                InferParameters parameters = {}) {
    std::vector<std::string> names;
    for (const auto& output : session.Signature().outputs) {
      names.push_back(output.name);
    }
    auto outputs = session.RunWithContext(inputs, names, WithParameters(std::move(parameters)));
    EXPECT_TRUE(outputs.ok()) << outputs.status().message();
    std::map<std::string, std::vector<float>> by_name;
    for (const auto& output : outputs.ok() ? *outputs : std::vector<Tensor>{}) {
      by_name[output.name] = output.datatype == DataType::kBytes
                                 ? std::vector<float>{output.data.ends_with("then") ? 1.0F : 0.0F}
                                 : Values(output);
    }
    return by_name;
  }

  MetricsRegistry metrics_;
  std::shared_ptr<FakeRuns> runs_ = std::make_shared<FakeRuns>();
  std::map<std::string, std::shared_ptr<LoadedModel>> models_;
  std::chrono::steady_clock::time_point now_{};
};

constexpr std::string_view kTwoModels = R"({
  "kind": "pipeline",
  "inputs": [{"name": "x", "datatype": "FP32", "dims": [1, 2]}],
  "outputs": [{"name": "a", "datatype": "FP32", "dims": [-1, 2]},
              {"name": "b", "datatype": "FP32", "dims": [-1, 2]},
              {"name": "ab", "datatype": "FP32", "dims": [-1, 4]}],
  "steps": [
    {"name": "one", "model": "plus1", "input_map": {"x": "x"}, "output_map": {"y": "a"}},
    {"name": "two", "model": "plus2", "input_map": {"x": "x"}, "output_map": {"y": "b"}},
    {"name": "join", "op": "concat", "inputs": ["a", "b"], "axis": 1, "output": "ab"}
  ]})";

TEST_F(PipelineTest, ChainsModelsAndOperations) {
  auto session = Load(std::string(kTwoModels));
  ASSERT_TRUE(session.ok()) << session.status().message();
  auto outputs = Run(**session, {Floats("x", {1, 2}, {1, 2})});
  EXPECT_EQ(outputs["a"], (std::vector<float>{2, 3}));
  EXPECT_EQ(outputs["b"], (std::vector<float>{3, 4}));
  EXPECT_EQ(outputs["ab"], (std::vector<float>{2, 3, 3, 4}));
}

TEST_F(PipelineTest, RunsIndependentStepsThatWaitOnAnotherProcessAtOnce) {
  Serve(true);
  auto session = Load(std::string(kTwoModels));
  ASSERT_TRUE(session.ok()) << session.status().message();
  runs_->Hold();
  auto running = std::async(std::launch::async, [&] {
    return (*session)->Run({Floats("x", {1, 2}, {1, 2})}, {"ab"});
  });
  const bool both_held = runs_->AwaitHeld(2);
  runs_->Release();
  EXPECT_TRUE(both_held) << "the two independent model steps did not run at once";
  EXPECT_TRUE(running.get().ok());
}

// Models that compute in perch share the engine's thread pool: run at once
// they would only contend for the cores, so they run in turn.
TEST_F(PipelineTest, RunsIndependentStepsThatComputeInTurn) {
  auto session = Load(std::string(kTwoModels));
  ASSERT_TRUE(session.ok()) << session.status().message();
  runs_->SetLatency(std::chrono::milliseconds(5));
  auto outputs = Run(**session, {Floats("x", {1, 2}, {1, 2})});
  EXPECT_EQ(outputs["ab"], (std::vector<float>{2, 3, 3, 4}));
  EXPECT_EQ(runs_->started(), 2);
  EXPECT_EQ(runs_->max_concurrent(), 1);
}

struct BadPipeline {
  std::string what;
  std::string steps;
  std::string message;
};

TEST_F(PipelineTest, RefusesBadPipelinesSayingWhy) {
  const std::vector<BadPipeline> cases = {
      {"missing model",
       R"({"name": "one", "model": "nowhere", "input_map": {"x": "x"}, "output_map": {"y": "out"}})",
       "step 'one': model 'nowhere' is not in the repository"},
      {"cycle",
       R"({"name": "one", "model": "plus1", "input_map": {"x": "z"}, "output_map": {"y": "out"}},
          {"name": "two", "model": "plus2", "input_map": {"x": "out"}, "output_map": {"y": "z"}})",
       "form a cycle"},
      {"produced twice",
       R"({"name": "one", "model": "plus1", "input_map": {"x": "x"}, "output_map": {"y": "out"}},
          {"name": "two", "model": "plus2", "input_map": {"x": "x"}, "output_map": {"y": "out"}})",
       "tensor 'out' is produced twice"},
      {"datatype mismatch",
       R"({"name": "int", "op": "cast", "input": "x", "output": "xi", "datatype": "INT32"},
          {"name": "one", "model": "plus1", "input_map": {"x": "xi"}, "output_map": {"y": "out"}})",
       "tensor 'xi' is INT32 [1,2] but model 'plus1' takes FP32 [-1,2]"},
      {"shape mismatch",
       R"({"name": "flat", "op": "reshape", "input": "x", "output": "xf", "dims": [2]},
          {"name": "one", "model": "plus1", "input_map": {"x": "xf"}, "output_map": {"y": "out"}})",
       "tensor 'xf' is FP32 [2] but model 'plus1' takes FP32 [-1,2]"},
      {"unknown tensor",
       R"({"name": "one", "model": "plus1", "input_map": {"x": "nope"}, "output_map": {"y": "out"}})",
       "reads tensor 'nope', which no step or input produces"},
  };
  for (const auto& bad : cases) {
    const std::string json = R"({"kind": "pipeline",
      "inputs": [{"name": "x", "datatype": "FP32", "dims": [1, 2]}],
      "outputs": [{"name": "out", "datatype": "FP32", "dims": [-1, 2]}],
      "steps": [)" + bad.steps +
                             "]}";
    const auto session = Load(json);
    ASSERT_FALSE(session.ok()) << bad.what;
    EXPECT_NE(session.status().message().find(bad.message), std::string::npos)
        << bad.what << ": " << session.status().message();
  }
}

constexpr std::string_view kStateful = R"({
  "kind": "pipeline",
  "inputs": [{"name": "x", "datatype": "FP32", "dims": [1]}],
  "outputs": [{"name": "last3", "datatype": "FP32", "dims": [3]},
              {"name": "previous", "datatype": "FP32", "dims": [1]},
              {"name": "branch", "datatype": "BYTES", "dims": [1]},
              {"name": "doubled", "datatype": "FP32", "dims": [1]}],
  "streams": {"max_streams": 2, "idle_seconds": 60},
  "steps": [
    {"name": "window", "op": "window", "input": "x", "output": "last3", "frames": 3},
    {"name": "previous", "op": "state", "output": "previous", "from": "x", "datatype": "FP32",
     "dims": [1], "fill": -1},
    {"name": "big", "op": "switch", "inputs": ["x"], "threshold": 10, "output": "branch",
     "then": ["double"]},
    {"name": "double", "op": "scale", "input": "x", "output": "doubled", "scale": 2}
  ]})";

TEST_F(PipelineTest, KeepsWindowsAndStatePerStream) {
  auto session = Load(std::string(kStateful));
  ASSERT_TRUE(session.ok()) << session.status().message();
  Run(**session, {Floats("x", {1}, {1})}, StreamId("a"));
  Run(**session, {Floats("x", {1}, {5})}, StreamId("b"));
  auto a = Run(**session, {Floats("x", {1}, {2})}, StreamId("a"));
  EXPECT_EQ(a["last3"], (std::vector<float>{0, 1, 2}));
  EXPECT_EQ(a["previous"], (std::vector<float>{1}));
  auto b = Run(**session, {Floats("x", {1}, {6})}, StreamId("b"));
  EXPECT_EQ(b["last3"], (std::vector<float>{0, 5, 6}));
  EXPECT_EQ(b["previous"], (std::vector<float>{5}));
}

TEST_F(PipelineTest, SwitchRunsItsBranchOnlyWhenTheConditionHolds) {
  auto session = Load(std::string(kStateful));
  ASSERT_TRUE(session.ok()) << session.status().message();
  auto low = Run(**session, {Floats("x", {1}, {3})}, StreamId("a"));
  EXPECT_EQ(low["branch"], (std::vector<float>{0}));
  EXPECT_FALSE(low.contains("doubled"));
  auto high = Run(**session, {Floats("x", {1}, {12})}, StreamId("a"));
  EXPECT_EQ(high["branch"], (std::vector<float>{1}));
  EXPECT_EQ(high["doubled"], (std::vector<float>{24}));
}

TEST_F(PipelineTest, DropsIdleAndLeastRecentlyUsedStreams) {
  auto session = Load(std::string(kStateful));
  ASSERT_TRUE(session.ok()) << session.status().message();
  Run(**session, {Floats("x", {1}, {1})}, StreamId("a"));
  Run(**session, {Floats("x", {1}, {2})}, StreamId("b"));
  Run(**session, {Floats("x", {1}, {3})}, StreamId("a"));
  Run(**session, {Floats("x", {1}, {4})}, StreamId("c"));  // the cap is 2: "b" goes
  EXPECT_EQ(Run(**session, {Floats("x", {1}, {5})}, StreamId("b"))["previous"],
            (std::vector<float>{-1}));
  now_ += std::chrono::seconds(61);
  EXPECT_EQ(Run(**session, {Floats("x", {1}, {6})}, StreamId("b"))["previous"],
            (std::vector<float>{-1}));
  const std::string text = metrics_.RenderPrometheus();
  EXPECT_NE(text.find(R"(perch_pipeline_streams_dropped_total{model="p",reason="full"} 2)"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find(R"(perch_pipeline_streams_dropped_total{model="p",reason="idle"} 2)"),
            std::string::npos)
      << text;
}

TEST_F(PipelineTest, HundredThousandStreamIdsStayWithinTheCap) {
  auto session = Load(std::string(kStateful));
  ASSERT_TRUE(session.ok()) << session.status().message();
  for (int i = 0; i < 100'000; ++i) {
    ASSERT_TRUE((*session)
                    ->RunWithContext({Floats("x", {1}, {1})}, {"last3"},
                                     WithParameters(StreamId(std::to_string(i))))
                    .ok());
  }
  const std::string text = metrics_.RenderPrometheus();
  EXPECT_NE(text.find(R"(perch_pipeline_streams{model="p"} 2)"), std::string::npos) << text;
  EXPECT_NE(text.find(R"(perch_pipeline_streams_dropped_total{model="p",reason="full"} 99998)"),
            std::string::npos)
      << text;
}

struct BadStream {
  std::string what;
  InferParameters parameters;
  std::string message;
};

TEST_F(PipelineTest, RefusesARequestWithoutAUsableStreamId) {
  auto session = Load(std::string(kStateful));
  ASSERT_TRUE(session.ok()) << session.status().message();
  const std::vector<BadStream> cases = {
      {"missing", {{"other", std::string("a")}}, "request parameter \"stream_id\""},
      {"empty", StreamId(""), "\"stream_id\" must name the stream in 1 to 256 bytes"},
      {"too long", StreamId(std::string(257, 's')), "in 1 to 256 bytes"},
      {"a boolean", {{"stream_id", true}}, "must be a string (or an integer), not a boolean"},
      {"a number", {{"stream_id", 1.5}}, "not a number"},
  };
  for (const auto& bad : cases) {
    const auto outputs = (*session)->RunWithContext({Floats("x", {1}, {1})}, {"last3"},
                                                    WithParameters(bad.parameters));
    ASSERT_FALSE(outputs.ok()) << bad.what;
    EXPECT_EQ(outputs.status().code(), StatusCode::kInvalidArgument) << bad.what;
    EXPECT_NE(outputs.status().message().find(bad.message), std::string::npos)
        << bad.what << ": " << outputs.status().message();
  }
  // The plain Run has no parameters: the same refusal.
  EXPECT_EQ((*session)->Run({Floats("x", {1}, {1})}, {"last3"}).status().code(),
            StatusCode::kInvalidArgument);
}

TEST_F(PipelineTest, AnIntegerStreamIdIsItsDecimalText) {
  auto session = Load(std::string(kStateful));
  ASSERT_TRUE(session.ok()) << session.status().message();
  Run(**session, {Floats("x", {1}, {4})}, {{"stream_id", int64_t{7}}});
  EXPECT_EQ(Run(**session, {Floats("x", {1}, {5})}, StreamId("7"))["previous"],
            (std::vector<float>{4}));
}

TEST_F(PipelineTest, TheStreamParameterCanBeRenamed) {
  std::string json(kStateful);
  json.replace(json.find(R"("streams": {)"), 12, R"("streams": {"parameter": "mic", )");
  auto session = Load(json);
  ASSERT_TRUE(session.ok()) << session.status().message();
  Run(**session, {Floats("x", {1}, {4})}, {{"mic", std::string("kitchen")}});
  EXPECT_EQ(Run(**session, {Floats("x", {1}, {5})}, {{"mic", std::string("kitchen")}})["previous"],
            (std::vector<float>{4}));
  const auto unnamed = (*session)->RunWithContext({Floats("x", {1}, {1})}, {"last3"},
                                                  WithParameters(StreamId("kitchen")));
  EXPECT_NE(unnamed.status().message().find("request parameter \"mic\""), std::string::npos)
      << unnamed.status().message();
}

TEST_F(PipelineTest, AStreamInputTensorIsRefusedAtLoadSayingWhatReplacedIt) {
  std::string json(kStateful);
  json.replace(json.find(R"("streams": {)"), 12, R"("streams": {"input": "stream", )");
  const auto session = Load(json);
  ASSERT_FALSE(session.ok());
  EXPECT_NE(session.status().message().find("a stream is named by a request parameter"),
            std::string::npos)
      << session.status().message();
  json = std::string(kStateful);
  json.replace(json.find(R"("streams": {)"), 12, R"("streams": {"parameter": "timeout", )");
  EXPECT_FALSE(Load(json).ok());
}

}  // namespace
}  // namespace perch
