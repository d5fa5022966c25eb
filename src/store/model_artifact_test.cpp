#include "store/model_artifact.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "store/media_types.h"

namespace perch {
namespace {

ModelMetadata SampleMetadata() {
  ModelMetadata metadata;
  metadata.name = "hey_jarvis";
  metadata.version = 3;
  metadata.inputs = {{"x.1", "FP32", {-1, 16, 96}}};
  metadata.outputs = {{"53", "FP32", {-1, 1}}};
  metadata.model_config_json = R"({"max_batch_size":8})";
  return metadata;
}

Descriptor Blob(std::string_view content, std::string media_type) {
  return Descriptor{std::move(media_type), Sha256Of(content), content.size(), {}};
}

TEST(ModelArtifactTest, ConfigRoundTrips) {
  const auto decoded = DecodeModelConfig(EncodeModelConfig(SampleMetadata()));
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(decoded->name, "hey_jarvis");
  EXPECT_EQ(decoded->version, 3);
  EXPECT_EQ(decoded->platform, "onnx");
  EXPECT_EQ(decoded->architectures, (std::vector<std::string>{"amd64", "arm64"}));
  ASSERT_EQ(decoded->inputs.size(), 1u);
  EXPECT_EQ(decoded->inputs[0].name, "x.1");
  EXPECT_EQ(decoded->inputs[0].shape, (std::vector<int64_t>{-1, 16, 96}));
  EXPECT_EQ(decoded->outputs[0].datatype, "FP32");
  EXPECT_EQ(decoded->model_config_json, R"({"max_batch_size":8})");
}

TEST(ModelArtifactTest, ConfigRefusesBadFields) {
  for (
      const std::string bad : {
          R"([])",
          R"({"version":1,"platform":"onnx","inputs":[],"outputs":[]})",
          R"({"name":"../x","version":1,"platform":"onnx","inputs":[],"outputs":[]})",
          R"({"name":"m","version":0,"platform":"onnx","inputs":[],"outputs":[]})",
          R"({"name":"m","version":1,"platform":"tensorflow","inputs":[],"outputs":[]})",
          R"({"name":"m","version":1,"platform":"onnx","inputs":[{"name":"x"}],"outputs":[]})",
          R"({"name":"m","version":1,"platform":"onnx","inputs":[],"outputs":[],"model_config":3})",
          "not json",
      }) {
    const auto decoded = DecodeModelConfig(bad);
    EXPECT_FALSE(decoded.ok()) << bad;
    EXPECT_EQ(decoded.status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

TEST(ModelArtifactTest, ManifestIsDeterministicAndDecodes) {
  const std::string config = EncodeModelConfig(SampleMetadata());
  const Descriptor config_descriptor = Blob(config, std::string(media_type::kPerchModelConfig));
  const std::vector<ModelFile> files = {
      {"model.onnx", Blob("onnx bytes", std::string(media_type::kModelPackWeightRaw))},
      {"weights/model.onnx.data", Blob("data", std::string(media_type::kModelPackWeightRaw))}};
  const std::string manifest = EncodeModelManifest(SampleMetadata(), config_descriptor, files);
  EXPECT_EQ(manifest, EncodeModelManifest(SampleMetadata(), config_descriptor, files));

  const auto decoded = ParseImageManifest("", manifest);
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(decoded->media_type, media_type::kOciManifest);
  EXPECT_EQ(decoded->artifact_type, media_type::kPerchModelArtifact);
  EXPECT_EQ(decoded->config.digest, config_descriptor.digest);
  EXPECT_EQ(decoded->annotations.at("org.opencontainers.image.title"), "hey_jarvis");
  const auto artifact = ModelArtifactOf(*decoded);
  ASSERT_TRUE(artifact.ok()) << artifact.status().ToString();
  ASSERT_EQ(artifact->files.size(), 2u);
  EXPECT_EQ(artifact->files[1].path, "weights/model.onnx.data");
  EXPECT_EQ(artifact->files[1].layer.annotations.at("org.cncf.model.filepath"),
            "weights/model.onnx.data");
  EXPECT_EQ(artifact->files[1].layer.size, 4u);
}

TEST(ModelArtifactTest, PathsThatLeaveTheFolderAreRefused) {
  for (const std::string& bad : std::vector<std::string>{
           "", "/etc/passwd", "../model.onnx", "a/../../b", "a//b", "./model.onnx", "a/.", "a\\b",
           "a/", std::string("a\nb"), std::string(256, 'a')}) {
    EXPECT_EQ(ValidateModelFilePath(bad).code(), StatusCode::kInvalidArgument) << bad;
  }
  for (const std::string good : {"model.onnx", "sub/dir/w.bin", "..data", "a..b"}) {
    EXPECT_TRUE(ValidateModelFilePath(good).ok()) << good;
  }
}

std::string ManifestWithLayers(const nlohmann::json& layers) {
  const std::string config = EncodeModelConfig(SampleMetadata());
  nlohmann::json manifest = {
      {"schemaVersion", 2},
      {"mediaType", media_type::kOciManifest},
      {"artifactType", media_type::kPerchModelArtifact},
      {"config",
       {{"mediaType", media_type::kPerchModelConfig},
        {"digest", Sha256Of(config).str()},
        {"size", config.size()}}},
      {"layers", layers},
  };
  return manifest.dump();
}

nlohmann::json Layer(const std::string& path) {
  return {{"mediaType", media_type::kModelPackWeightRaw},
          {"digest", Sha256Of(path).str()},
          {"size", path.size()},
          {"annotations", {{"org.cncf.model.filepath", path}}}};
}

TEST(ModelArtifactTest, ManifestWithTraversalOrCollisionsIsRefused) {
  for (const auto& layers : {
           nlohmann::json::array({Layer("model.onnx"), Layer("../evil")}),
           nlohmann::json::array({Layer("model.onnx"), Layer("/abs")}),
           nlohmann::json::array({Layer("model.onnx"), Layer("model.onnx")}),
           nlohmann::json::array({Layer("model.onnx"), Layer("a"), Layer("a/b")}),
           nlohmann::json::array({Layer("weights.bin")}),  // no model.onnx
       }) {
    const auto manifest = ParseManifest("", ManifestWithLayers(layers));
    ASSERT_TRUE(manifest.ok()) << manifest.status().ToString();
    const auto artifact = ModelArtifactOf(*manifest);
    EXPECT_EQ(artifact.status().code(), StatusCode::kInvalidArgument) << layers.dump();
  }
}

TEST(ModelArtifactTest, NonModelsAndMalformedManifestsAreRefused) {
  EXPECT_EQ(ParseManifest("", "{}").status().code(), StatusCode::kInvalidArgument);
  const auto index =
      ParseManifest("", R"({"schemaVersion":2,"mediaType":")" + std::string(media_type::kOciIndex) +
                            R"(","manifests":[]})");
  ASSERT_TRUE(index.ok()) << index.status().ToString();
  const auto not_a_model = ModelArtifactOf(*index);
  EXPECT_EQ(not_a_model.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(not_a_model.status().message().find("image index"), std::string::npos);
  nlohmann::json image =
      nlohmann::json::parse(ManifestWithLayers(nlohmann::json::array({Layer("model.onnx")})));
  image.erase("artifactType");
  image["config"]["mediaType"] = "application/vnd.oci.image.config.v1+json";
  const auto manifest = ParseManifest("", image.dump());
  ASSERT_TRUE(manifest.ok());
  const auto artifact = ModelArtifactOf(*manifest);
  EXPECT_EQ(artifact.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(artifact.status().message().find("not a perch model"), std::string::npos);
  image["layers"][0]["digest"] = "sha256:../../etc";
  EXPECT_EQ(ParseManifest("", image.dump()).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace perch
