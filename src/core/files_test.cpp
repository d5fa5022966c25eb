// perch's own durable writes (current.json, device.json, ...) under a power
// loss at every flush point and under failing disks.
#include "core/files.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <fstream>

#include "testing/fault_files.h"

namespace perch {
namespace {

namespace fs = std::filesystem;
using perch::testing::FaultFileIo;

class FilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    folder_ = fs::temp_directory_path() /
              ("perch_files_test_" +
               std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(folder_);
    fs::create_directories(folder_);
  }
  void TearDown() override { fs::remove_all(folder_); }

  std::string Content(const fs::path& path) {
    auto content = ReadFile(path);
    return content.ok() ? *content : "<" + content.status().message() + ">";
  }

  fs::path folder_;
};

TEST_F(FilesTest, ReadsWholeFilesOfAnySizeAndSaysWhatIsWrong) {
  const fs::path large = folder_ / "large.bin";
  std::string bytes(3 * 1024 * 1024 + 7, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) {
    bytes[i] = static_cast<char>(i * 131 % 251);
  }
  ASSERT_TRUE(WriteFileAtomically(large, bytes).ok());
  EXPECT_EQ(Content(large), bytes);
  ASSERT_TRUE(WriteFileAtomically(folder_ / "empty", "").ok());
  EXPECT_EQ(Content(folder_ / "empty"), "");
  // A file whose size stat cannot tell is read to its end.
  const auto status = ReadFile("/proc/self/status");
  ASSERT_TRUE(status.ok()) << status.status().message();
  EXPECT_NE(status->find("Name:"), std::string::npos);
  EXPECT_EQ(ReadFile(folder_ / "missing").status().code(), StatusCode::kNotFound);
  const auto folder = ReadFile(folder_);
  ASSERT_FALSE(folder.ok());
  EXPECT_NE(folder.status().message().find("Is a directory"), std::string::npos)
      << folder.status().message();
}

TEST_F(FilesTest, WritesAndReplaces) {
  const fs::path path = folder_ / "current.json";
  ASSERT_TRUE(WriteFileAtomically(path, "old").ok());
  ASSERT_TRUE(WriteFileAtomically(path, "new").ok());
  EXPECT_EQ(Content(path), "new");
  EXPECT_FALSE(fs::exists(folder_ / ".current.json.tmp"));
}

// A power loss at each flush point of a replacement (the temporary file's
// fsync, the folder's fsync) and after the last one: the file holds the old
// content or the new, never a mix or nothing, and the new whenever the write
// was acknowledged.
TEST_F(FilesTest, APowerLossAtEveryFlushPointLeavesOldOrNewAndNewOnceAcknowledged) {
  const fs::path path = folder_ / "current.json";
  FaultFileIo probe;
  ASSERT_TRUE(WriteFileAtomically(path, "old", 0644, probe).ok());
  const int64_t points = probe.flushes();
  ASSERT_EQ(points, 2);
  for (int64_t cut = 1; cut <= points + 1; ++cut) {
    ASSERT_TRUE(WriteFileAtomically(path, "old").ok());
    FaultFileIo io;
    io.CutPowerAt(cut);
    const Status written = WriteFileAtomically(path, "new", 0644, io);
    io.PowerLoss();
    const std::string after = Content(path);
    if (written.ok()) {
      EXPECT_EQ(after, "new") << "acknowledged, then lost at flush point " << cut;
    } else {
      EXPECT_TRUE(after == "old" || after == "new") << "flush point " << cut << ": " << after;
    }
    EXPECT_EQ(written.ok(), cut > points) << "flush point " << cut;
  }
}

TEST_F(FilesTest, AFullDiskIsAClearErrorThatClearsWhenSpaceReturns) {
  const fs::path path = folder_ / "device.json";
  ASSERT_TRUE(WriteFileAtomically(path, "old").ok());
  FaultFileIo io;
  io.FailWrites(ENOSPC);
  const Status full = WriteFileAtomically(path, "new", 0600, io);
  EXPECT_EQ(full.code(), StatusCode::kResourceExhausted) << full.message();
  EXPECT_NE(full.message().find("No space left"), std::string::npos) << full.message();
  EXPECT_NE(full.message().find("free some space"), std::string::npos) << full.message();
  EXPECT_EQ(Content(path), "old");
  EXPECT_FALSE(fs::exists(folder_ / ".device.json.tmp"));
  io.FailWrites(0);
  EXPECT_TRUE(WriteFileAtomically(path, "new", 0600, io).ok());
  EXPECT_EQ(Content(path), "new");
}

TEST_F(FilesTest, AWriteErrorIsInternalAndLeavesTheOldFile) {
  const fs::path path = folder_ / "current.json";
  ASSERT_TRUE(WriteFileAtomically(path, "old").ok());
  FaultFileIo io;
  io.FailWrites(EIO);
  const Status failed = WriteFileAtomically(path, "new", 0644, io);
  EXPECT_EQ(failed.code(), StatusCode::kInternal) << failed.message();
  EXPECT_NE(failed.message().find(".current.json.tmp"), std::string::npos) << failed.message();
  EXPECT_EQ(Content(path), "old");
}

// The kernel reports a failed writeback once; an fsync retried after it can
// succeed over lost bytes. So a failed fsync fails the write, once, and the
// caller is told.
TEST_F(FilesTest, AFailedSyncIsNeverRetriedIntoSuccess) {
  const fs::path path = folder_ / "current.json";
  ASSERT_TRUE(WriteFileAtomically(path, "old").ok());
  FaultFileIo io;
  io.FailSyncs(EIO);
  const Status failed = WriteFileAtomically(path, "new", 0644, io);
  EXPECT_EQ(failed.code(), StatusCode::kInternal) << failed.message();
  EXPECT_NE(failed.message().find("cannot sync"), std::string::npos) << failed.message();
  EXPECT_EQ(io.flushes(), 1) << "the failed fsync was retried";
  io.PowerLoss();
  EXPECT_EQ(Content(path), "old");
}

TEST_F(FilesTest, AFailedFolderSyncFailsTheWrite) {
  const fs::path path = folder_ / "current.json";
  FaultFileIo io;
  io.CutPowerAt(2);  // the folder's fsync, after the rename
  EXPECT_FALSE(WriteFileAtomically(path, "new", 0644, io).ok());
  io.PowerLoss();
  EXPECT_FALSE(fs::exists(path)) << "the rename was never made durable";
}

TEST_F(FilesTest, SyncTreeSyncsEveryFolderOnce) {
  fs::create_directories(folder_ / "release" / "a" / "1");
  fs::create_directories(folder_ / "release" / "b" / "2");
  std::ofstream(folder_ / "release" / "a" / "model.json") << "{}";
  FaultFileIo io;
  ASSERT_TRUE(SyncTree(folder_ / "release", io).ok());
  EXPECT_EQ(io.flushes(), 5);
  FaultFileIo failing;
  failing.FailSyncs(EIO);
  EXPECT_EQ(SyncTree(folder_ / "release", failing).code(), StatusCode::kInternal);
}

}  // namespace
}  // namespace perch
