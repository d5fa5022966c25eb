#include "tensor/half.h"

#include <gtest/gtest.h>

#include <cmath>

namespace perch {
namespace {

TEST(HalfTest, KnownValues) {
  EXPECT_EQ(FloatToHalf(1.0f), 0x3C00);
  EXPECT_EQ(FloatToHalf(-2.0f), 0xC000);
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7BFF);
  EXPECT_EQ(FloatToHalf(1e6f), 0x7C00);                    // overflow to infinity
  EXPECT_EQ(FloatToHalf(5.960464477539063e-08f), 0x0001);  // smallest subnormal
  EXPECT_FLOAT_EQ(HalfToFloat(0x3555), 0.333251953125f);
}

TEST(HalfTest, EveryHalfRoundTripsThroughFloat) {
  for (uint32_t bits = 0; bits <= 0xFFFF; ++bits) {
    const auto half = static_cast<uint16_t>(bits);
    const float value = HalfToFloat(half);
    if (std::isnan(value)) {
      EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(value))));
      continue;
    }
    EXPECT_EQ(FloatToHalf(value), half) << "bits " << bits;
  }
}

TEST(HalfTest, RoundsToNearestEven) {
  // 2049 lies halfway between the halves 2048 and 2050: ties go to even (2048).
  EXPECT_EQ(HalfToFloat(FloatToHalf(2049.0f)), 2048.0f);
  EXPECT_EQ(HalfToFloat(FloatToHalf(2051.0f)), 2052.0f);
}

TEST(Bfloat16Test, KnownValuesAndRounding) {
  EXPECT_EQ(FloatToBfloat16(1.0f), 0x3F80);
  EXPECT_EQ(Bfloat16ToFloat(0xC040), -3.0f);
  EXPECT_EQ(Bfloat16ToFloat(FloatToBfloat16(1.00390625f)), 1.0f);  // tie to even
  EXPECT_TRUE(std::isnan(Bfloat16ToFloat(FloatToBfloat16(std::nanf("")))));
}

}  // namespace
}  // namespace perch
