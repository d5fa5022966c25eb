#include "models/memory_budget.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include "core/files.h"

namespace perch {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kMiB = int64_t{1} << 20;

TEST(ParseMemorySizeTest, ReadsBytesAndBinaryUnits) {
  EXPECT_EQ(*ParseMemorySize("0"), 0);
  EXPECT_EQ(*ParseMemorySize("4096"), 4096);
  EXPECT_EQ(*ParseMemorySize("512M"), 512 * kMiB);
  EXPECT_EQ(*ParseMemorySize("512MiB"), 512 * kMiB);
  EXPECT_EQ(*ParseMemorySize("2g"), 2048 * kMiB);
  EXPECT_EQ(*ParseMemorySize("1.5G"), 1536 * kMiB);
  EXPECT_EQ(*ParseMemorySize("64KB"), 64 * 1024);
  EXPECT_EQ(*ParseMemorySize("1T"), 1024 * 1024 * kMiB);
}

TEST(ParseMemorySizeTest, RefusesWhatIsNotASize) {
  for (const char* text : {"", "M", "-1", "12X", "1..5G", "5 G", "1GG", "99999999999T"}) {
    const auto parsed = ParseMemorySize(text);
    ASSERT_FALSE(parsed.ok()) << text;
    EXPECT_EQ(parsed.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(parsed.status().message().find("512M"), std::string::npos)
        << "the message shows an accepted form: " << parsed.status().message();
  }
}

TEST(ResolveMemoryLimitTest, AutoIsTheDefaultLimitAndZeroIsNone) {
  EXPECT_EQ(*ResolveMemoryLimit("0"), 0);
  EXPECT_EQ(*ResolveMemoryLimit("auto"), DefaultMemoryLimit());
  EXPECT_FALSE(ResolveMemoryLimit("automatic").ok());
}

class DefaultMemoryLimitTest : public ::testing::Test {
 protected:
  DefaultMemoryLimitTest()
      : root_(fs::path(::testing::TempDir()) /
              ("perch-memory-budget-" + std::to_string(getpid()) + "-" +
               ::testing::UnitTest::GetInstance()->current_test_info()->name())) {
    fs::remove_all(root_);
    fs::create_directories(root_ / "cgroup" / "memory");
    Write("meminfo", "MemTotal:       8000000 kB\nMemAvailable:    1000000 kB\n");
  }
  ~DefaultMemoryLimitTest() override { fs::remove_all(root_); }

  void Write(const std::string& file, const std::string& content) {
    ASSERT_TRUE(WriteFileAtomically(root_ / file, content).ok());
  }
  int64_t Limit() { return DefaultMemoryLimit(root_ / "cgroup", root_ / "meminfo"); }

  const fs::path root_;
};

TEST_F(DefaultMemoryLimitTest, TakesNineTenthsOfTheCgroupV2Limit) {
  Write("cgroup/memory.max", "1048576000\n");
  EXPECT_EQ(Limit(), 1048576000 / 10 * 9);
}

TEST_F(DefaultMemoryLimitTest, TakesTheCgroupV1LimitWhenThereIsNoV2One) {
  Write("cgroup/memory/memory.limit_in_bytes", "524288000\n");
  EXPECT_EQ(Limit(), 524288000 / 10 * 9);
}

TEST_F(DefaultMemoryLimitTest, FallsBackToAvailableMemoryWithoutACgroupLimit) {
  Write("cgroup/memory.max", "max\n");
  EXPECT_EQ(Limit(), int64_t{1000000} * 1024 / 10 * 9);
  Write("cgroup/memory.max", "");
  fs::remove(root_ / "cgroup" / "memory.max");
  Write("cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n");  // v1: no limit
  EXPECT_EQ(Limit(), int64_t{1000000} * 1024 / 10 * 9);
}

TEST_F(DefaultMemoryLimitTest, IsZeroWhenNothingCanBeRead) {
  fs::remove(root_ / "meminfo");
  EXPECT_EQ(Limit(), 0);
}

TEST(ResidentBytesTest, ReadsThisProcess) { EXPECT_GT(ResidentBytes(), 0); }

}  // namespace
}  // namespace perch
