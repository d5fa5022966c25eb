#include "batch/batch_job.h"

#include <gtest/gtest.h>

#include <fstream>

#include "core/files.h"

namespace perch {
namespace {

namespace fs = std::filesystem;

class BatchJobTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("perch-batch-job-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  void Write(const fs::path& path, const std::string& text) {
    fs::create_directories(path.parent_path());
    std::ofstream(path) << text;
  }
  fs::path dir_;
  const ModelIdentity model_{"m", 1, "sha256:aa"};
};

TEST_F(BatchJobTest, FolderGivesItsJsonLinesFilesAndOneInputForItsArrays) {
  Write(dir_ / "in/b.jsonl", "{}\n");
  Write(dir_ / "in/a.jsonl", "{}\n");
  Write(dir_ / "in/x.npy", "");
  Write(dir_ / "in/notes.txt", "");
  auto inputs = ListBatchInputs({dir_ / "in"});
  ASSERT_TRUE(inputs.ok()) << inputs.status().message();
  ASSERT_EQ(inputs->size(), 3u);
  EXPECT_EQ((*inputs)[0].output_name, "a.jsonl");
  EXPECT_EQ((*inputs)[1].output_name, "b.jsonl");
  EXPECT_EQ((*inputs)[2].output_name, "in.jsonl");
  EXPECT_EQ((*inputs)[2].arrays.size(), 1u);
}

TEST_F(BatchJobTest, RefusesMissingPathsEmptyFoldersAndClashingNames) {
  EXPECT_EQ(ListBatchInputs({dir_ / "missing.jsonl"}).status().code(), StatusCode::kNotFound);
  fs::create_directories(dir_ / "empty");
  EXPECT_EQ(ListBatchInputs({dir_ / "empty"}).status().code(), StatusCode::kInvalidArgument);
  Write(dir_ / "one/r.jsonl", "");
  Write(dir_ / "two/r.jsonl", "");
  EXPECT_EQ(ListBatchInputs({dir_ / "one", dir_ / "two"}).status().code(),
            StatusCode::kInvalidArgument);
  Write(dir_ / "_SUCCESS", "");
  EXPECT_EQ(ListBatchInputs({dir_ / "_SUCCESS"}).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(BatchJobTest, OutputFolderRefusesAnotherModelsResults) {
  ASSERT_TRUE(OutputFolder::Open(dir_ / "out", model_).ok());
  auto other = OutputFolder::Open(dir_ / "out", ModelIdentity{"m", 2, "sha256:bb"});
  EXPECT_EQ(other.status().code(), StatusCode::kAlreadyExists);
  EXPECT_NE(other.status().message().find("sha256:aa"), std::string::npos);
  EXPECT_TRUE(OutputFolder::Open(dir_ / "out", model_).ok());
}

TEST_F(BatchJobTest, OutputUnderAFileIsRefused) {
  Write(dir_ / "file", "");
  EXPECT_EQ(OutputFolder::Open(dir_ / "file/out", model_).status().code(),
            StatusCode::kInvalidArgument);
}

TEST_F(BatchJobTest, AFileIsFinishedOnlyOnceCommitted) {
  auto folder = OutputFolder::Open(dir_ / "out", model_);
  ASSERT_TRUE(folder.ok());
  auto file = (*folder)->Begin("r.jsonl");
  ASSERT_TRUE(file.ok());
  (*file)->stream() << "{\"model_name\":\"m\"}\n{\"id\":\"2\",\"error\":\"bad\"}\n";
  EXPECT_EQ((*folder)->Finished("r.jsonl").status().code(), StatusCode::kNotFound);
  ASSERT_TRUE((*file)->Commit().ok());
  auto counts = (*folder)->Finished("r.jsonl");
  ASSERT_TRUE(counts.ok());
  EXPECT_EQ(counts->records, 2);
  EXPECT_EQ(counts->errors, 1);
  EXPECT_FALSE(fs::exists(dir_ / "out/.r.jsonl.partial"));
}

TEST_F(BatchJobTest, ReopeningRemovesAStaleSuccess) {
  auto folder = OutputFolder::Open(dir_ / "out", model_);
  ASSERT_TRUE(folder.ok());
  ASSERT_TRUE((*folder)->WriteSuccess({}, 1.0).ok());
  EXPECT_TRUE(fs::exists(dir_ / "out/_SUCCESS"));
  ASSERT_TRUE(OutputFolder::Open(dir_ / "out", model_).ok());
  EXPECT_FALSE(fs::exists(dir_ / "out/_SUCCESS"));
}

}  // namespace
}  // namespace perch
