#include "store/pipeline_artifact.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "store/manifest.h"
#include "store/media_types.h"

namespace perch {
namespace {

constexpr std::string_view kPipeline = R"({
  "kind": "pipeline",
  "inputs": [{"name": "audio", "datatype": "INT16", "dims": [1280]}],
  "outputs": [{"name": "score", "datatype": "FP32", "dims": [-1, 1]}],
  "steps": [
    {"name": "f", "op": "cast", "input": "audio", "output": "x", "datatype": "FP32"},
    {"name": "mel", "model": "melspectrogram", "input_map": {"input": "x"}, "output_map": {"output": "m"}},
    {"name": "head", "model": "hey_jarvis_v0.1", "version": "2", "input_map": {"x.1": "m"}, "output_map": {"53": "score"}},
    {"name": "mel2", "model": "melspectrogram", "input_map": {"input": "x"}, "output_map": {"output": "m2"}}
  ]})";

Digest DigestOf(std::string_view text) { return Sha256Of(text); }

ModelMetadata PinnedMetadata() {
  const auto pinned = PinPipeline(kPipeline, {{"melspectrogram", {1, DigestOf("mel")}},
                                              {"hey_jarvis_v0.1", {2, DigestOf("head")}}});
  EXPECT_TRUE(pinned.ok()) << pinned.status().ToString();
  return ModelMetadata{.name = "wakeword",
                       .version = 1,
                       .platform = std::string(kPipelinePlatform),
                       .architectures = {"amd64", "arm64"},
                       .inputs = {},
                       .outputs = {},
                       .model_config_json = pinned.ok() ? *pinned : ""};
}

TEST(PipelineArtifactTest, ListsEachStepModelOnce) {
  const auto models = PipelineStepModels(kPipeline);
  ASSERT_TRUE(models.ok()) << models.status().ToString();
  ASSERT_EQ(models->size(), 2u);
  EXPECT_EQ((*models)[0].model, "melspectrogram");
  EXPECT_EQ((*models)[0].steps, (std::vector<std::string>{"mel", "mel2"}));
  EXPECT_EQ((*models)[1].version, "2");
}

// Found by the model_artifact fuzzer: fields of the wrong JSON type threw
// out of the parser instead of being refused.
TEST(PipelineArtifactTest, RefusesFieldsOfTheWrongType) {
  EXPECT_EQ(PipelineStepModels(R"({"kind": [], "steps": []})").status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(PipelineStepModels(
                R"({"kind": "pipeline", "steps": [{"name": "a", "model": "m", "digest": 5}]})")
                .status()
                .code(),
            StatusCode::kInvalidArgument);
}

TEST(PipelineArtifactTest, RefusesOneModelInTwoVersions) {
  std::string body(kPipeline);
  body.replace(body.find(R"("name": "mel2", "model": "melspectrogram")"),
               std::string_view(R"("name": "mel2", "model": "melspectrogram")").size(),
               R"("name": "mel2", "model": "melspectrogram", "version": "3")");
  const auto models = PipelineStepModels(body);
  ASSERT_FALSE(models.ok());
  EXPECT_NE(models.status().message().find("steps 'mel' and 'mel2' name model 'melspectrogram'"),
            std::string::npos)
      << models.status().message();
}

TEST(PipelineArtifactTest, PinsEveryModelStep) {
  const ModelMetadata metadata = PinnedMetadata();
  const auto pinned =
      PinnedStepsOf(Reference::Parse("127.0.0.1:5000/ww/wakeword:1").value(), metadata);
  ASSERT_TRUE(pinned.ok()) << pinned.status().ToString();
  ASSERT_EQ(pinned->size(), 2u);
  EXPECT_EQ((*pinned)[0].reference.ToString(),
            "127.0.0.1:5000/ww/melspectrogram@" + DigestOf("mel").str());
  EXPECT_EQ((*pinned)[0].version, 1);
  EXPECT_EQ((*pinned)[1].reference.repository, "ww/hey_jarvis_v0.1");
  EXPECT_EQ((*pinned)[1].version, 2);
  const auto tensors = PipelineTensors(kPipeline, "outputs");
  ASSERT_TRUE(tensors.ok());
  EXPECT_EQ((*tensors)[0].shape, (std::vector<int64_t>{-1, 1}));
}

TEST(PipelineArtifactTest, RefusesAnUnpinnedStep) {
  ModelMetadata metadata = PinnedMetadata();
  metadata.model_config_json = std::string(kPipeline);
  const auto pinned =
      PinnedStepsOf(Reference::Parse("127.0.0.1:5000/wakeword:1").value(), metadata);
  ASSERT_FALSE(pinned.ok());
  EXPECT_EQ(pinned.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(pinned.status().message().find("step 'mel' (model 'melspectrogram') is not pinned"),
            std::string::npos)
      << pinned.status().message();
}

TEST(PipelineArtifactTest, RefusesAModelNameNoRepositoryCanHave) {
  EXPECT_FALSE(StepRepository("ww/wakeword", "Upper").ok());
  EXPECT_EQ(StepRepository("wakeword", "mel").value(), "mel");
}

TEST(PipelineArtifactTest, ManifestHasOnlyTheEmptyLayer) {
  const ModelMetadata metadata = PinnedMetadata();
  const std::string config = EncodeModelConfig(metadata);
  const Descriptor config_descriptor{
      std::string(media_type::kPerchModelConfig), Sha256Of(config), config.size(), {}};
  const std::string manifest = EncodeModelManifest(metadata, config_descriptor, {});
  const auto parsed = ParseManifest(media_type::kOciManifest, manifest);
  ASSERT_TRUE(parsed.ok());
  ASSERT_EQ(parsed->layers.size(), 1u);
  EXPECT_EQ(parsed->layers[0].digest, Sha256Of(kEmptyBlob));
  const auto artifact = ModelArtifactOf(*parsed);
  ASSERT_TRUE(artifact.ok()) << artifact.status().ToString();
  EXPECT_TRUE(artifact->files.empty());
  const auto decoded = DecodeModelConfig(config);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->platform, kPipelinePlatform);

  // A pipeline manifest carrying a file is refused: nothing to install it as.
  nlohmann::json forged = nlohmann::json::parse(manifest);
  forged["layers"][0]["mediaType"] = media_type::kModelPackWeightRaw;
  const auto forged_parsed = ParseManifest(media_type::kOciManifest, forged.dump());
  ASSERT_TRUE(forged_parsed.ok());
  EXPECT_FALSE(ModelArtifactOf(*forged_parsed).ok());
}

}  // namespace
}  // namespace perch
