#include "store/manifest.h"

#include <gtest/gtest.h>

#include <map>

#include "store/media_types.h"

namespace perch {
namespace {

const std::string kConfig = Sha256Of("config").str();
const std::string kLayer = Sha256Of("layer").str();

std::string ImageManifest(const std::string& extra = "") {
  return R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",)"
         R"("config":{"mediaType":"application/vnd.perch.model.config.v1+json","digest":")" +
         kConfig + R"(","size":6},"layers":[{"mediaType":"application/octet-stream","digest":")" +
         kLayer + R"(","size":5}])" + extra + "}";
}

TEST(ManifestTest, ReadsAnImageManifest) {
  auto parsed = ParseManifest(media_type::kOciManifest, ImageManifest());
  ASSERT_TRUE(parsed.ok()) << parsed.status().message();
  EXPECT_EQ(parsed->media_type, media_type::kOciManifest);
  EXPECT_FALSE(parsed->IsIndex());
  EXPECT_EQ(parsed->artifact_type, "");
  EXPECT_EQ(parsed->ReferrerArtifactType(), "application/vnd.perch.model.config.v1+json");
  EXPECT_EQ(parsed->config.digest.str(), kConfig);
  EXPECT_EQ(parsed->config.size, 6u);
  ASSERT_EQ(parsed->layers.size(), 1u);
  EXPECT_EQ(parsed->layers[0].size, 5u);
  EXPECT_TRUE(parsed->manifests.empty());
  EXPECT_FALSE(parsed->subject.has_value());
}

TEST(ManifestTest, ReadsSubjectArtifactTypeAndAnnotations) {
  const std::string subject = Sha256Of("subject").str();
  auto parsed =
      ParseManifest("application/vnd.oci.image.manifest.v1+json; charset=utf-8",
                    ImageManifest(R"(,"artifactType":"application/x.sig","subject":{"mediaType":)"
                                  R"("application/vnd.oci.image.manifest.v1+json","digest":")" +
                                  subject + R"(","size":10},"annotations":{"a":"b"})"));
  ASSERT_TRUE(parsed.ok()) << parsed.status().message();
  EXPECT_EQ(parsed->artifact_type, "application/x.sig");
  EXPECT_EQ(parsed->ReferrerArtifactType(), "application/x.sig");
  ASSERT_TRUE(parsed->subject.has_value());
  EXPECT_EQ(parsed->subject->digest.str(), subject);
  EXPECT_EQ(parsed->annotations, (std::map<std::string, std::string>{{"a", "b"}}));
}

TEST(ManifestTest, ReadsAnIndex) {
  auto parsed = ParseManifest(media_type::kOciIndex,
                              R"({"schemaVersion":2,"manifests":[{"mediaType":)"
                              R"("application/vnd.oci.image.manifest.v1+json","digest":")" +
                                  kLayer + R"(","size":5}]})");
  ASSERT_TRUE(parsed.ok()) << parsed.status().message();
  EXPECT_EQ(parsed->media_type, media_type::kOciIndex);
  EXPECT_TRUE(parsed->IsIndex());
  ASSERT_EQ(parsed->manifests.size(), 1u);
  EXPECT_TRUE(parsed->layers.empty());
  EXPECT_EQ(ParseImageManifest(media_type::kOciIndex, R"({"schemaVersion":2,"manifests":[]})")
                .status()
                .code(),
            StatusCode::kInvalidArgument);
}

TEST(ManifestTest, RefusesWhatARegistryMustNotStore) {
  const std::vector<std::pair<std::string, std::string>> bad = {
      {std::string(media_type::kOciManifest), "{not json"},
      {std::string(media_type::kOciManifest), "[]"},
      {std::string(media_type::kOciIndex), ImageManifest()},  // mediaType disagrees
      {"application/x-unknown", R"({"schemaVersion":2,"layers":[]})"},
      {"", R"({"schemaVersion":2,"layers":[]})"},
      {std::string(media_type::kOciManifest), R"({"schemaVersion":1,"layers":[]})"},
      {std::string(media_type::kOciManifest), R"({"schemaVersion":2,"layers":[]})"},  // no config
      {std::string(media_type::kOciManifest),
       R"({"schemaVersion":2,"config":{"mediaType":"a/b","digest":"sha256:12","size":1},)"
       R"("layers":[]})"},
      {std::string(media_type::kOciManifest),
       R"({"schemaVersion":2,"config":{"mediaType":"a/b","digest":")" + kConfig +
           R"(","size":-1},"layers":[]})"},
      {std::string(media_type::kOciManifest), ImageManifest(R"(,"annotations":{"a":1})")},
  };
  for (const auto& [content_type, bytes] : bad) {
    EXPECT_EQ(ParseManifest(content_type, bytes).status().code(), StatusCode::kInvalidArgument)
        << content_type << " " << bytes;
  }
}

// Descriptor fields, checked the same way wherever the descriptor sits.
std::string WithLayer(const std::string& layer_fields) {
  return R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",)"
         R"("config":{"mediaType":"application/vnd.perch.model.config.v1+json","digest":")" +
         kConfig + R"(","size":6},"layers":[{"digest":")" + kLayer + R"(",)" + layer_fields + "}]}";
}

// The registry (manifest.cpp) and the client (model_artifact.cpp) used to
// read manifests with rules of their own; each case below is one where they
// disagreed, now answered once, as the OCI image spec says.
TEST(ManifestTest, DescriptorRulesTheRegistryAndTheClientOnceDisagreedOn) {
  const std::vector<std::string> refused = {
      // The client took an empty mediaType, the registry did not.
      R"("mediaType":"","size":5)",
      // Neither checked that a media type looks like one.
      R"("mediaType":"not a media type","size":5)",
      R"("mediaType":"application/","size":5)",
      // The client took sizes past int64, which the registry refused.
      R"("mediaType":"a/b","size":9223372036854775808)",
      R"("mediaType":"a/b","size":18446744073709551615)",
      R"("mediaType":"a/b","size":5.0)",
      R"("mediaType":"a/b","size":"5")",
      // The registry never looked at descriptor annotations.
      R"("mediaType":"a/b","size":5,"annotations":{"k":1})",
      R"("mediaType":"a/b","size":5,"annotations":["k"])",
      // The client never looked at a descriptor's artifactType.
      R"("mediaType":"a/b","size":5,"artifactType":7)",
  };
  for (const std::string& fields : refused) {
    EXPECT_EQ(ParseManifest("", WithLayer(fields)).status().code(), StatusCode::kInvalidArgument)
        << fields;
  }
  const auto largest =
      ParseManifest("", WithLayer(R"("mediaType":"a/b","size":9223372036854775807)"));
  ASSERT_TRUE(largest.ok()) << largest.status().message();
  EXPECT_EQ(largest->layers[0].size, uint64_t{9223372036854775807});
  // Annotations and artifactType are kept, for both sides.
  const auto kept = ParseManifest(
      "", WithLayer(R"("mediaType":"a/b","size":0,"annotations":{"org.cncf.model.filepath":)"
                    R"("model.onnx"},"artifactType":"application/x.y","urls":["ignored"])"));
  ASSERT_TRUE(kept.ok()) << kept.status().message();
  EXPECT_EQ(kept->layers[0].annotations.at("org.cncf.model.filepath"), "model.onnx");
  EXPECT_EQ(kept->layers[0].artifact_type, "application/x.y");
}

TEST(ManifestTest, ManifestRulesTheRegistryAndTheClientOnceDisagreedOn) {
  const std::string subject = Sha256Of("subject").str();
  const std::vector<std::string> refused = {
      // The client ignored a mediaType, artifactType or annotations of the
      // wrong type; the registry refused them.
      ImageManifest(R"(,"artifactType":5)"),
      ImageManifest(R"(,"artifactType":"no slash")"),
      ImageManifest(R"(,"annotations":"a=b")"),
      ImageManifest(R"(,"annotations":{"a":{"b":"c"}})"),
      // The client never read the subject.
      ImageManifest(R"(,"subject":{"mediaType":"a/b","digest":"sha256:00","size":1})"),
      ImageManifest(R"(,"subject":"sha256:)" + subject + R"(")"),
      R"({"schemaVersion":2,"mediaType":5,"config":{},"layers":[]})",
  };
  for (const std::string& bytes : refused) {
    EXPECT_EQ(ParseManifest("", bytes).status().code(), StatusCode::kInvalidArgument) << bytes;
    EXPECT_EQ(ParseManifest(media_type::kOciManifest, bytes).status().code(),
              StatusCode::kInvalidArgument)
        << bytes;
  }
  // The client ignored the Content-Type; now a disagreeing one is refused
  // on both sides.
  const auto differs = ParseImageManifest(media_type::kDockerManifest, ImageManifest());
  EXPECT_EQ(differs.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(differs.status().message().find("Content-Type"), std::string::npos);
}

TEST(ManifestTest, WithoutAMediaTypeTheShapeDecides) {
  // The registry refused these without a Content-Type; the client took the
  // first as an image manifest and refused the second for its "manifests".
  const std::string image = R"({"schemaVersion":2,"config":{"mediaType":"a/b","digest":")" +
                            kConfig + R"(","size":6},"layers":[]})";
  const auto parsed_image = ParseManifest("", image);
  ASSERT_TRUE(parsed_image.ok()) << parsed_image.status().message();
  EXPECT_EQ(parsed_image->media_type, media_type::kOciManifest);
  const auto parsed_index = ParseManifest("", R"({"schemaVersion":2,"manifests":[]})");
  ASSERT_TRUE(parsed_index.ok()) << parsed_index.status().message();
  EXPECT_EQ(parsed_index->media_type, media_type::kOciIndex);
  // Both, or neither: nothing says which it is.
  EXPECT_EQ(ParseManifest("", R"({"schemaVersion":2,"config":{},"manifests":[]})").status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseManifest("", R"({"schemaVersion":2,"layers":[]})").status().code(),
            StatusCode::kInvalidArgument);
  // A Content-Type says it when the document does not.
  const auto told = ParseManifest(media_type::kDockerManifest, image);
  ASSERT_TRUE(told.ok()) << told.status().message();
  EXPECT_EQ(told->media_type, media_type::kDockerManifest);
}

}  // namespace
}  // namespace perch
