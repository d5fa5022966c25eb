// IEEE 754 half precision (FP16) and bfloat16 (BF16) conversions, for
// encoding these datatypes as JSON numbers. Round to nearest, ties to even.
#pragma once

#include <cstdint>

namespace perch {

float HalfToFloat(uint16_t half);
uint16_t FloatToHalf(float value);
float Bfloat16ToFloat(uint16_t bf16);
uint16_t FloatToBfloat16(float value);

}  // namespace perch
