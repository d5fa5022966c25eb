#include "mqtt/backoff.h"

#include <algorithm>

namespace perch::mqtt {

Backoff::Backoff(std::chrono::milliseconds min, std::chrono::milliseconds max, uint64_t seed)
    : min_(min), max_(max), random_(seed) {}

std::chrono::milliseconds Backoff::Delay(int attempt) {
  // 2^16 times the minimum is past any sensible maximum; the cap on the
  // exponent keeps the product from overflowing.
  const auto base = min_ * (int64_t{1} << std::clamp(attempt, 0, 16));
  const int64_t capped = std::max<int64_t>(std::min(base, max_).count(), 1);
  std::uniform_int_distribution<int64_t> jitter(std::max<int64_t>(capped / 2, 1), capped);
  return std::chrono::milliseconds(jitter(random_));
}

}  // namespace perch::mqtt
