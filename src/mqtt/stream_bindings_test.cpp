// StreamBindings over a real ModelManager and ONNX Runtime, with the test
// models (tests/models/make_models.py, written into the build tree by CMake).
#include "mqtt/stream_bindings.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>

#include "core/log.h"
#include "core/metrics.h"
#include "engine/engine.h"
#include "models/model_manager.h"

namespace perch::mqtt {
namespace {

namespace fs = std::filesystem;
using Filters = std::vector<std::string>;

class StreamBindingsTest : public testing::Test {
 protected:
  void SetUp() override {
    // One per process: CTest runs the tests of this file in parallel processes.
    repository_ =
        fs::path(testing::TempDir()) / ("mqtt_stream_bindings_models_" + std::to_string(getpid()));
    fs::remove_all(repository_);
    for (const std::string name : {"bound", "plain"}) {
      fs::create_directories(repository_ / name / "1");
      // Throws (failing the test) when the test models are missing.
      fs::copy_file(fs::path(PERCH_TEST_MODELS) / "identity_fp32" / "1" / "model.onnx",
                    repository_ / name / "1" / "model.onnx");
    }
    Bind(R"({"input_topic": "sensors/+/audio", "output_topic": "line1/wakeword"})");
    auto engine = CreateOnnxEngine({.intra_op_threads = 1, .inter_op_threads = 1},
                                   Logger::ToStderr(LogLevel::kWarn, "test"));
    ASSERT_TRUE(engine.ok()) << engine.status().ToString();
    engine_ = std::move(engine).value();
    models_ = std::make_unique<ModelManager>(
        ModelManagerOptions{.repository = repository_, .poll_interval = {}}, *engine_, metrics_,
        Logger::ToStderr(LogLevel::kWarn, "test"));
    ASSERT_TRUE(models_->Start().ok());
    ASSERT_EQ(models_->ServedModels().size(), 2u) << "the test models did not load";
  }
  void TearDown() override {
    if (models_) {
      models_->Stop();
    }
    std::error_code ignored;
    fs::remove_all(repository_, ignored);
  }

  // The "mqtt" member of the model.json of "bound".
  void Bind(const std::string& mqtt) {
    std::ofstream(repository_ / "bound" / "model.json") << R"({"mqtt": )" << mqtt << "}";
  }

  fs::path repository_;
  std::unique_ptr<Engine> engine_;
  MetricsRegistry metrics_;
  std::unique_ptr<ModelManager> models_;
  StreamBindings bindings_;
};

TEST_F(StreamBindingsTest, FirstRefreshSubscribesToTheBoundTopics) {
  const auto changes = bindings_.Refresh(*models_);
  ASSERT_TRUE(changes.has_value());
  EXPECT_EQ(changes->subscribe, Filters{"sensors/+/audio"});
  EXPECT_TRUE(changes->unsubscribe.empty());
  EXPECT_EQ(bindings_.Filters(), Filters{"sensors/+/audio"});
  EXPECT_EQ(bindings_.model_names(), (Filters{"bound", "plain"}));
  EXPECT_FALSE(bindings_.Refresh(*models_).has_value()) << "nothing changed";
}

TEST_F(StreamBindingsTest, FindsTheBindingWhoseFilterMatches) {
  (void)bindings_.Refresh(*models_);
  EXPECT_EQ(bindings_.Find("sensors/7/audio"),
            (StreamBinding{.model = "bound", .output_topic = "line1/wakeword"}));
  EXPECT_EQ(bindings_.Find("sensors/7/video"), std::nullopt);
  EXPECT_EQ(bindings_.Find("sensors/7/audio/left"), std::nullopt);
  EXPECT_EQ(bindings_.Find("perch/lab/d1/infer/plain"), std::nullopt);
}

TEST_F(StreamBindingsTest, AChangedBindingMovesTheSubscription) {
  (void)bindings_.Refresh(*models_);
  Bind(R"({"input_topic": "sensors/#"})");
  ASSERT_TRUE(models_->LoadModel("bound").ok());
  const auto changes = bindings_.Refresh(*models_);
  ASSERT_TRUE(changes.has_value());
  EXPECT_EQ(changes->subscribe, Filters{"sensors/#"});
  EXPECT_EQ(changes->unsubscribe, Filters{"sensors/+/audio"});
  EXPECT_EQ(bindings_.Find("sensors/7/audio"),
            (StreamBinding{.model = "bound", .output_topic = ""}));
}

TEST_F(StreamBindingsTest, AnUnloadedModelLosesItsBindingAndLeavesTheStatus) {
  (void)bindings_.Refresh(*models_);
  ASSERT_TRUE(models_->UnloadModel("bound").ok());
  const auto changes = bindings_.Refresh(*models_);
  ASSERT_TRUE(changes.has_value());
  EXPECT_TRUE(changes->subscribe.empty());
  EXPECT_EQ(changes->unsubscribe, Filters{"sensors/+/audio"});
  EXPECT_EQ(bindings_.model_names(), Filters{"plain"});
  EXPECT_EQ(bindings_.Find("sensors/7/audio"), std::nullopt);
}

TEST_F(StreamBindingsTest, AModelComingOrGoingIsAChangeEvenWithoutBindings) {
  ASSERT_TRUE(models_->UnloadModel("bound").ok());
  (void)bindings_.Refresh(*models_);
  ASSERT_TRUE(models_->UnloadModel("plain").ok());
  const auto changes = bindings_.Refresh(*models_);
  ASSERT_TRUE(changes.has_value()) << "the status lists the models: it must be published again";
  EXPECT_TRUE(changes->subscribe.empty());
  EXPECT_TRUE(changes->unsubscribe.empty());
  EXPECT_TRUE(bindings_.model_names().empty());
}

}  // namespace
}  // namespace perch::mqtt
