// Internal to mqtt/: how long to wait before the next connection attempt.
//
// Threading: not thread-safe; one owner (the connection's network thread)
// calls Delay. The random source is the object's own, so it needs no lock.
#pragma once

#include <chrono>
#include <cstdint>
#include <random>

namespace perch::mqtt {

class Backoff {
 public:
  // Delays grow from `min` to `max`; `seed` makes the jitter reproducible.
  Backoff(std::chrono::milliseconds min, std::chrono::milliseconds max, uint64_t seed);

  // The wait before attempt `attempt` + 1 (0 after the first failure): min *
  // 2^attempt, capped at max, then a uniformly random point in its upper
  // half, so that a fleet reconnecting after a broker restart does not
  // arrive all at once. Never below 1 ms. Any attempt >= 0 is safe.
  std::chrono::milliseconds Delay(int attempt);

 private:
  const std::chrono::milliseconds min_;
  const std::chrono::milliseconds max_;
  std::mt19937_64 random_;
};

}  // namespace perch::mqtt
