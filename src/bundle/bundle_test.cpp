#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "bundle/bundle_format.h"
#include "bundle/bundle_reader.h"
#include "bundle/bundle_writer.h"

namespace perch::bundle {
namespace {

namespace fs = std::filesystem;

class BundleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ =
        fs::temp_directory_path() / ("perch-bundle-test-" + std::to_string(std::random_device()()));
    blobs_ = std::move(BlobStore::Open(root_ / "blobs")).value();
  }
  void TearDown() override { fs::remove_all(root_); }

  fs::path root_;
  std::unique_ptr<BlobStore> blobs_;
};

TEST(LocationStateTest, RoundTripsAndRefusesWhatIsWrong) {
  LocationState state{"plant-1",
                      7,
                      "2026-11-30T00:00:00Z",
                      {StateModel{"hey_jarvis", 1, "wakeword/hey_jarvis:1", Sha256Of("m")}}};
  auto decoded = DecodeLocationState(EncodeLocationState(state));
  ASSERT_TRUE(decoded.ok()) << decoded.status().message();
  EXPECT_EQ(decoded->generation, 7);
  ASSERT_EQ(decoded->models.size(), 1u);
  EXPECT_EQ(decoded->models[0].digest, Sha256Of("m"));

  EXPECT_FALSE(DecodeLocationState("[]").ok());
  EXPECT_FALSE(DecodeLocationState(R"({"generation": 0, "models": []})").ok());
  EXPECT_FALSE(DecodeLocationState(R"({"generation": "1", "models": []})").ok());
  state.models.push_back(state.models[0]);
  auto twice = DecodeLocationState(EncodeLocationState(state));
  ASSERT_FALSE(twice.ok());
  EXPECT_NE(twice.status().message().find("twice"), std::string::npos);
  state.models = {StateModel{"../x", 1, "r:1", Sha256Of("m")}};
  EXPECT_FALSE(DecodeLocationState(EncodeLocationState(state)).ok());
}

TEST(RefNameTest, FollowsTheImageLayoutGrammar) {
  EXPECT_TRUE(IsValidRefName("wakeword/hey_jarvis:1"));
  EXPECT_TRUE(IsValidRefName("repo@sha256:ab"));
  EXPECT_FALSE(IsValidRefName(""));
  EXPECT_FALSE(IsValidRefName("/abs"));
  EXPECT_FALSE(IsValidRefName("a//b"));
  EXPECT_FALSE(IsValidRefName("a/../b"));
  EXPECT_FALSE(IsValidRefName("trailing:"));
  EXPECT_FALSE(IsValidRefName("sp ace"));
}

TEST(BundleIndexTest, RefusesARefNameGivenTwice) {
  const std::string entry = R"({"mediaType": "application/vnd.oci.image.manifest.v1+json",
      "digest": ")" + Sha256Of("m").str() +
                            R"(", "size": 1,
      "annotations": {"org.opencontainers.image.ref.name": "a:1"}})";
  const std::string index = R"({"schemaVersion": 2, "manifests": [)" + entry + "," + entry + "]}";
  auto parsed = ParseBundleIndex(index);
  ASSERT_FALSE(parsed.ok());
  EXPECT_NE(parsed.status().message().find("twice"), std::string::npos);
  EXPECT_TRUE(ParseBundleIndex(R"({"schemaVersion": 2, "manifests": [)" + entry + "]}").ok());
  EXPECT_FALSE(CheckLayoutFile(R"({"imageLayoutVersion": "2.0.0"})").ok());
  EXPECT_TRUE(CheckLayoutFile(kLayoutJson).ok());
}

TEST_F(BundleTest, WritesAndReadsBackEveryBlob) {
  const Digest small = *blobs_->Put("small blob");
  const Digest large = *blobs_->Put(std::string(3 << 20, 'x'));  // several reader buffers
  const fs::path out = root_ / "site.tar";
  ASSERT_TRUE(
      WriteBundle(out, *blobs_, {small, large}, R"({"schemaVersion":2,"manifests":[]})").ok());
  auto other = std::move(BlobStore::Open(root_ / "other")).value();
  auto contents = ReadBundleFile(out, *other);
  ASSERT_TRUE(contents.ok()) << contents.status().message();
  EXPECT_EQ(contents->layout, kLayoutJson);
  EXPECT_EQ(contents->blobs.at(large), uint64_t{3} << 20);
  EXPECT_TRUE(other->Has(small));
  EXPECT_TRUE(other->Has(large));
  // A declared size over the limit is refused before the bytes are read.
  auto limited = ReadBundleFile(out, *other, ReaderLimits{.max_blob_bytes = 1 << 20});
  ASSERT_FALSE(limited.ok());
  EXPECT_NE(limited.status().message().find("more than the 1048576"), std::string::npos);
}

TEST_F(BundleTest, RefusesWhatIsNotACompleteTar) {
  const Digest blob = *blobs_->Put(std::string(100000, 'y'));
  const fs::path out = root_ / "site.tar";
  ASSERT_TRUE(WriteBundle(out, *blobs_, {blob}, "{}").ok());
  std::ifstream in(out, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto other = std::move(BlobStore::Open(root_ / "other")).value();
  auto truncated = ReadBundleMemory(std::string_view(bytes).substr(0, bytes.size() / 2), *other);
  ASSERT_FALSE(truncated.ok());
  EXPECT_NE(truncated.status().message().find("not a complete tar file"), std::string::npos);
  EXPECT_FALSE(other->Has(blob));
  EXPECT_FALSE(ReadBundleMemory("definitely not a tar", *other).ok());
  EXPECT_FALSE(ReadBundleMemory("", *other).ok());
}

}  // namespace
}  // namespace perch::bundle
