#include "http/byte_range.h"

#include <gtest/gtest.h>

namespace perch::http {
namespace {

TEST(ByteRangeTest, OneSatisfiableRange) {
  auto range = ParseRange("bytes=10-19", 100);
  ASSERT_TRUE(range);
  EXPECT_EQ(range->offset, 10u);
  EXPECT_EQ(range->length, 10u);
  range = ParseRange("bytes=90-", 100);
  ASSERT_TRUE(range);
  EXPECT_EQ(range->length, 10u);
  range = ParseRange("bytes=-5", 100);
  ASSERT_TRUE(range);
  EXPECT_EQ(range->offset, 95u);
  range = ParseRange("bytes=50-500", 100);  // clamped to the end
  ASSERT_TRUE(range);
  EXPECT_EQ(range->length, 50u);
}

TEST(ByteRangeTest, NothingElse) {
  for (const char* header : {"bytes=100-", "bytes=5-1", "bytes=0-1,3-4", "lines=0-1",
                             "bytes=", "bytes=-0", "bytes=a-b", "bytes=1", "bytes=-1-2"}) {
    EXPECT_FALSE(ParseRange(header, 100)) << header;
  }
  EXPECT_FALSE(ParseRange("bytes=-5", 0));
}

}  // namespace
}  // namespace perch::http
