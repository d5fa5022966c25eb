#include "models/repository.h"

#include <gtest/gtest.h>

#include <fstream>

namespace perch {
namespace {

namespace fs = std::filesystem;

TEST(RepositoryTest, ModelNames) {
  EXPECT_TRUE(IsValidModelName("hey_jarvis_v0.1"));
  EXPECT_TRUE(IsValidModelName(std::string(128, 'a')));
  EXPECT_FALSE(IsValidModelName(std::string(129, 'a')));
  EXPECT_FALSE(IsValidModelName(""));
  EXPECT_FALSE(IsValidModelName("."));
  EXPECT_FALSE(IsValidModelName(".."));
  EXPECT_FALSE(IsValidModelName("a/b"));
  EXPECT_FALSE(IsValidModelName("a b"));
  EXPECT_FALSE(IsValidModelName("caf\xc3\xa9"));
}

TEST(RepositoryTest, ModelVersions) {
  EXPECT_EQ(ParseModelVersion("1"), 1);
  EXPECT_EQ(ParseModelVersion("42"), 42);
  EXPECT_FALSE(ParseModelVersion("0").has_value());
  EXPECT_FALSE(ParseModelVersion("01").has_value());
  EXPECT_FALSE(ParseModelVersion("-1").has_value());
  EXPECT_FALSE(ParseModelVersion("1a").has_value());
  EXPECT_FALSE(ParseModelVersion("99999999999999999999").has_value());
}

class ScanTest : public testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("perch_repository_test_" +
             std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  void Write(const fs::path& relative, const std::string& content) {
    fs::create_directories((root_ / relative).parent_path());
    std::ofstream(root_ / relative) << content;
  }

  fs::path root_;
};

TEST_F(ScanTest, FindsModelsVersionsAndConfig) {
  Write("a/1/model.onnx", "x");
  Write("a/3/model.onnx", "x");
  Write("a/2/notes.txt", "no model here");
  Write("a/0/model.onnx", "version 0 is not a version");
  Write("a/model.json", R"({"instances": 2})");
  Write("b/1/model.onnx", "x");
  Write("b/model.json", R"({"instanses": 2})");
  Write("bad name/1/model.onnx", "x");
  Write("stray.txt", "x");
  const auto models = ScanRepository(root_);
  ASSERT_TRUE(models.ok());
  ASSERT_EQ(models->size(), 2u);
  const ModelOnDisk& a = (*models)[0];
  EXPECT_EQ(a.name, "a");
  EXPECT_TRUE(a.config_status.ok());
  EXPECT_EQ(a.config.instances, 2);
  EXPECT_EQ(a.versions.size(), 2u);
  EXPECT_TRUE(a.versions.contains(1));
  EXPECT_TRUE(a.versions.contains(3));
  const ModelOnDisk& b = (*models)[1];
  EXPECT_FALSE(b.config_status.ok());
  EXPECT_NE(b.config_status.message().find("instanses"), std::string::npos);
}

TEST_F(ScanTest, FingerprintFollowsFolderContents) {
  Write("a/1/model.onnx", "x");
  const auto before = ScanModel(root_, "a").value().versions.at(1).fingerprint;
  Write("a/1/weights.bin", "external data");
  const auto after = ScanModel(root_, "a").value().versions.at(1).fingerprint;
  EXPECT_NE(before, after);
}

TEST_F(ScanTest, MissingThings) {
  EXPECT_EQ(ScanRepository(root_ / "nope").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(ScanModel(root_, "nope").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(ScanModel(root_, "..").status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace perch
