#include "store/digest.h"

#include <gtest/gtest.h>

#include <fstream>
#include <vector>

namespace perch {
namespace {

TEST(DigestTest, HashesKnownVectors) {
  EXPECT_EQ(Sha256Of("").str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  Sha256 hasher;
  hasher.Update("a");
  hasher.Update("bc");
  EXPECT_EQ(hasher.Finish().str(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(DigestTest, ParsesOnlyWellFormedSha256) {
  const std::string hex(64, 'a');
  auto ok = Digest::Parse("sha256:" + hex);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->hex(), hex);
  for (const std::string& bad : std::vector<std::string>{
           "", "sha256:", "sha256:" + hex.substr(1), "sha256:" + hex + "a", "SHA256:" + hex,
           "sha256:" + std::string(64, 'A'), "sha512:" + std::string(128, 'a'), hex,
           "sha256:" + std::string(63, 'a') + "/", "sha256:../../../../etc/passwd"}) {
    const auto parsed = Digest::Parse(bad);
    EXPECT_FALSE(parsed.ok()) << bad;
    EXPECT_EQ(parsed.status().code(), StatusCode::kInvalidArgument);
  }
  EXPECT_NE(Digest::Parse("sha512:" + hex).status().message().find("use sha256"),
            std::string::npos);
}

TEST(DigestTest, HashesFiles) {
  const auto path = std::filesystem::path(testing::TempDir()) / "digest_test_file";
  std::ofstream(path) << "abc";
  auto digest = Sha256OfFile(path);
  ASSERT_TRUE(digest.ok());
  EXPECT_EQ(*digest, Sha256Of("abc"));
  EXPECT_EQ(Sha256OfFile(path.string() + ".missing").status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace perch
