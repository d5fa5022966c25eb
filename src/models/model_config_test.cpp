#include "models/model_config.h"

#include <gtest/gtest.h>

namespace perch {
namespace {

TEST(ModelConfigTest, ParsesEveryKey) {
  const auto config = ParseModelConfig(R"({
    "max_batch_size": 8, "instances": 2, "threads": 1, "max_queue_size": 16,
    "dynamic_batching": {"preferred_batch_sizes": [4, 8], "max_queue_delay_us": 500,
                         "wait_when_idle": true},
    "version_policy": {"specific": {"versions": [1, 3]}},
    "inputs": [{"name": "x", "datatype": "FP32", "dims": [-1, 16]}],
    "outputs": [{"name": "y"}],
    "warmup": {"runs": 2, "shapes": {"x": [1, 16]}},
    "mqtt": {"input_topic": "sensors/+/audio", "output_topic": "results/audio"}})");
  ASSERT_TRUE(config.ok()) << config.status().message();
  EXPECT_EQ(config->max_batch_size, 8);
  EXPECT_EQ(config->instances, 2);
  EXPECT_EQ(config->threads, 1);
  EXPECT_EQ(config->version_policy.kind, VersionPolicy::Kind::kSpecific);
  EXPECT_EQ(config->version_policy.specific, (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(config->inputs[0].dims, (Shape{-1, 16}));
  EXPECT_EQ(config->warmup_runs, 2);
  EXPECT_EQ(config->warmup_shapes.at("x"), (Shape{1, 16}));
  EXPECT_EQ(config->max_queue_size, 16);
  ASSERT_TRUE(config->mqtt.has_value());
  EXPECT_EQ(config->mqtt->input_topic, "sensors/+/audio");
  EXPECT_EQ(config->mqtt->output_topic, "results/audio");
  ASSERT_TRUE(config->dynamic_batching.has_value());
  EXPECT_EQ(config->dynamic_batching->preferred_batch_sizes, (std::vector<int64_t>{4, 8}));
  EXPECT_EQ(config->dynamic_batching->max_queue_delay_us, 500);
  EXPECT_TRUE(config->dynamic_batching->wait_when_idle);
}

TEST(ModelConfigTest, EmptyObjectGivesDefaults) {
  const auto config = ParseModelConfig("{}");
  ASSERT_TRUE(config.ok());
  EXPECT_EQ(config->instances, 1);
  EXPECT_EQ(config->version_policy.kind, VersionPolicy::Kind::kLatest);
  EXPECT_EQ(config->version_policy.latest, 1);
}

// Regression (AddressSanitizer, issue 10): the policy's kind was read
// through a structured binding into a destroyed temporary. Every kind and
// an unknown one go through that read.
TEST(ModelConfigTest, ReadsEveryVersionPolicyKind) {
  const auto all = ParseModelConfig(R"({"version_policy": {"all": {}}})");
  ASSERT_TRUE(all.ok()) << all.status().message();
  EXPECT_EQ(all->version_policy.kind, VersionPolicy::Kind::kAll);
  const auto latest = ParseModelConfig(R"({"version_policy": {"latest": {"num_versions": 3}}})");
  ASSERT_TRUE(latest.ok()) << latest.status().message();
  EXPECT_EQ(latest->version_policy.kind, VersionPolicy::Kind::kLatest);
  EXPECT_EQ(latest->version_policy.latest, 3);
  const auto specific = ParseModelConfig(R"({"version_policy": {"specific": {"versions": [2]}}})");
  ASSERT_TRUE(specific.ok()) << specific.status().message();
  EXPECT_EQ(specific->version_policy.specific, (std::vector<int64_t>{2}));
  const std::string long_kind(100, 'k');  // beyond any small-string buffer
  const auto unknown = ParseModelConfig(R"({"version_policy": {")" + long_kind + R"(": {}}})");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("\"" + long_kind + "\" is unknown"), std::string::npos)
      << unknown.status().message();
}

TEST(ModelConfigTest, RefusesMistakesByName) {
  const auto expect_error = [](const std::string& json, const std::string& fragment) {
    const auto config = ParseModelConfig(json);
    ASSERT_FALSE(config.ok()) << json;
    EXPECT_NE(config.status().message().find(fragment), std::string::npos)
        << config.status().message();
  };
  expect_error("[1]", "not a JSON object");
  expect_error("{", "not a JSON object");
  expect_error(R"({"max_batch_sise": 4})", "unknown key \"max_batch_sise\"");
  expect_error(R"({"instances": 0})", "\"instances\" must be an integer from 1");
  expect_error(R"({"threads": "two"})", "\"threads\"");
  expect_error(R"({"version_policy": {"newest": {}}})", "\"newest\" is unknown");
  expect_error(R"({"version_policy": {"latest": {"num_versions": 0}}})", "num_versions");
  expect_error(R"({"version_policy": {"specific": {"versions": [0]}}})", "positive integer");
  expect_error(R"({"inputs": [{"name": "x", "datatype": "FLOAT"}]})", "unknown datatype");
  expect_error(R"({"inputs": [{"name": "x", "dims": [-2]}]})", "dims");
  expect_error(R"({"warmup": 3})", "\"warmup\" must be an object");
  expect_error(R"({"warmup": {"shapes": [1, 2]}})", "must map input names to arrays of sizes");
  expect_error(R"({"warmup": {"shapes": {"x": []}}})", "'x' has no array of 1 to 16 sizes");
  expect_error(R"({"warmup": {"shapes": {"x": [1, -1]}}})",
               "'x' has a size that is not an integer");
  expect_error(R"({"warmup": {"shapes": {"x": [1, "2"]}}})", "'x' has a size that is not");
  expect_error(R"({"dynamic_batching": {}})", "needs \"max_batch_size\" above 0");
  expect_error(R"({"max_batch_size": 4, "dynamic_batching": {"preferred_batch_sizes": [8]}})",
               "preferred_batch_sizes lists 8");
  expect_error(R"({"max_batch_size": 4, "dynamic_batching": {"wait_when_idle": "yes"}})",
               "dynamic_batching.wait_when_idle is \"yes\", not true or false");
  expect_error(R"({"max_batch_size": 4, "dynamic_batching": {"max_delay": 1}})",
               "unknown key \"max_delay\"");
  expect_error(R"({"max_queue_size": 0})", "max_queue_size");
  expect_error(R"({"mqtt": {"output_topic": "a"}})", "needs \"input_topic\"");
  expect_error(R"({"mqtt": {"input_topic": "a", "output_topic": "b/#"}})", "wildcards");
  expect_error(R"({"mqtt": {"input_topic": ""}})", "non-empty topic");
  expect_error(R"({"mqtt": {"input_topic": "a", "qos": 2}})", "unknown key \"qos\"");
  expect_error(R"({"execution_providers": "cuda"})", "non-empty array");
  expect_error(R"({"execution_providers": []})", "non-empty array");
  expect_error(R"({"execution_providers": ["gpu", "cpu"]})", "\"gpu\" is not one of cpu, cuda");
  expect_error(R"({"execution_providers": [1]})", "1 is not one of");
}

TEST(ModelConfigTest, ReadsExecutionProvidersInOrder) {
  const auto config = ParseModelConfig(R"({"execution_providers": ["cuda", "cpu"]})");
  ASSERT_TRUE(config.ok()) << config.status().message();
  EXPECT_EQ(config->execution_providers, (std::vector<std::string>{"cuda", "cpu"}));
  EXPECT_TRUE(ParseModelConfig("{}")->execution_providers.empty());
}

TEST(ModelConfigTest, KeepsAPipelineBodyForThePipelineComponent) {
  const std::string body = R"({"kind": "pipeline", "instances": 2, "steps": [], "streams": {}})";
  const auto config = ParseModelConfig(body);
  ASSERT_TRUE(config.ok()) << config.status().message();
  EXPECT_EQ(config->pipeline, body);
  EXPECT_EQ(config->instances, 2);
  EXPECT_FALSE(ParseModelConfig(R"({"kind": "model"})")->pipeline);
  EXPECT_EQ(ParseModelConfig(R"({"kind": "chain"})").status().code(), StatusCode::kInvalidArgument);
  // Steps belong to pipelines; batching keys do not.
  EXPECT_EQ(ParseModelConfig(R"({"steps": []})").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseModelConfig(R"({"kind": "pipeline", "max_batch_size": 4})").status().code(),
            StatusCode::kInvalidArgument);
}

TEST(VersionPolicyTest, Selects) {
  const std::vector<int64_t> available{1, 2, 5};
  VersionPolicy policy;
  EXPECT_EQ(policy.Select(available), (std::vector<int64_t>{5}));
  policy.latest = 2;
  EXPECT_EQ(policy.Select(available), (std::vector<int64_t>{2, 5}));
  policy.latest = 10;
  EXPECT_EQ(policy.Select(available), available);
  policy.kind = VersionPolicy::Kind::kSpecific;
  policy.specific = {1, 4};
  EXPECT_EQ(policy.Select(available), (std::vector<int64_t>{1}));
  policy.kind = VersionPolicy::Kind::kAll;
  EXPECT_EQ(policy.Select(available), available);
}

TEST(ApplyOverridesTest, NarrowsDynamicDimsAndRefusesContradictions) {
  const ModelSignature model{
      .inputs = {{.name = "x", .datatype = DataType::kFp32, .shape = {-1, -1}}},
      .outputs = {{.name = "y", .datatype = DataType::kFp32, .shape = {-1}}},
  };
  ModelConfig config;
  config.inputs = {{.name = "x", .datatype = DataType::kFp32, .dims = Shape{-1, 16}}};
  const auto narrowed = ApplyOverrides(model, config);
  ASSERT_TRUE(narrowed.ok());
  EXPECT_EQ(narrowed->inputs[0].shape, (Shape{-1, 16}));

  config.inputs = {{.name = "x", .datatype = DataType::kInt64, .dims = {}}};
  EXPECT_FALSE(ApplyOverrides(model, config).ok());
  config.inputs = {{.name = "z", .datatype = {}, .dims = {}}};
  EXPECT_FALSE(ApplyOverrides(model, config).ok());
  config.inputs = {{.name = "x", .datatype = {}, .dims = Shape{4}}};
  EXPECT_FALSE(ApplyOverrides(model, config).ok());

  config.inputs = {};
  config.max_batch_size = 4;
  EXPECT_TRUE(ApplyOverrides(model, config).ok());
  const ModelSignature fixed{
      .inputs = {{.name = "x", .datatype = DataType::kFp32, .shape = {1, 3}}}, .outputs = {}};
  EXPECT_FALSE(ApplyOverrides(fixed, config).ok());
}

}  // namespace
}  // namespace perch
