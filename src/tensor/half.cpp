#include "tensor/half.h"

#include <bit>
#include <cmath>

namespace perch {

float HalfToFloat(uint16_t half) {
  const uint32_t sign = static_cast<uint32_t>(half & 0x8000) << 16;
  const uint32_t exponent = (half >> 10) & 0x1F;
  const uint32_t mantissa = half & 0x3FF;
  if (exponent == 0) {
    // Zero or subnormal: value = mantissa * 2^-24.
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 0x1F) {
    return std::bit_cast<float>(sign | 0x7F800000u | (mantissa << 13));
  }
  return std::bit_cast<float>(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

uint16_t FloatToHalf(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  const auto sign = static_cast<uint16_t>((bits >> 16) & 0x8000);
  const uint32_t abs_bits = bits & 0x7FFFFFFF;
  if (abs_bits >= 0x7F800000u) {  // Inf or NaN
    return static_cast<uint16_t>(sign | 0x7C00 | (abs_bits > 0x7F800000u ? 0x200 : 0));
  }
  if (abs_bits >= 0x477FF000u) {  // rounds to a value past the largest half
    return static_cast<uint16_t>(sign | 0x7C00);
  }
  if (abs_bits < 0x38800000u) {  // below the smallest normal half: subnormal or zero
    const float magnitude = std::bit_cast<float>(abs_bits);
    const auto scaled = static_cast<uint32_t>(std::nearbyint(magnitude * 16777216.0f));  // 2^24
    return static_cast<uint16_t>(sign | scaled);
  }
  // Normal: rebias the exponent, round the 13 dropped mantissa bits to even.
  const uint32_t rebased = abs_bits - (112u << 23);
  const uint32_t rounded = rebased + 0xFFF + ((rebased >> 13) & 1);
  return static_cast<uint16_t>(sign | (rounded >> 13));
}

float Bfloat16ToFloat(uint16_t bf16) {
  return std::bit_cast<float>(static_cast<uint32_t>(bf16) << 16);
}

uint16_t FloatToBfloat16(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  if ((bits & 0x7FFFFFFF) > 0x7F800000u) {  // NaN stays a quiet NaN
    return static_cast<uint16_t>((bits >> 16) | 0x40);
  }
  const uint32_t rounded = bits + 0x7FFF + ((bits >> 16) & 1);
  return static_cast<uint16_t>(rounded >> 16);
}

}  // namespace perch
