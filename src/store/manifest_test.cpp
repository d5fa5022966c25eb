#include "store/manifest.h"

#include <gtest/gtest.h>

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
  EXPECT_EQ(parsed->artifact_type, "application/vnd.perch.model.config.v1+json");
  ASSERT_EQ(parsed->blobs.size(), 2u);
  EXPECT_EQ(parsed->blobs[0].digest.str(), kConfig);
  EXPECT_EQ(parsed->blobs[1].size, 5u);
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
  ASSERT_TRUE(parsed->subject.has_value());
  EXPECT_EQ(parsed->subject->digest.str(), subject);
  EXPECT_EQ(parsed->annotations, R"({"a":"b"})");
}

TEST(ManifestTest, ReadsAnIndex) {
  auto parsed = ParseManifest(media_type::kOciIndex,
                              R"({"schemaVersion":2,"manifests":[{"mediaType":)"
                              R"("application/vnd.oci.image.manifest.v1+json","digest":")" +
                                  kLayer + R"(","size":5}]})");
  ASSERT_TRUE(parsed.ok()) << parsed.status().message();
  EXPECT_EQ(parsed->media_type, media_type::kOciIndex);
  ASSERT_EQ(parsed->manifests.size(), 1u);
  EXPECT_TRUE(parsed->blobs.empty());
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

}  // namespace
}  // namespace perch
