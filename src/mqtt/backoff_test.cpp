#include "mqtt/backoff.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

namespace perch::mqtt {
namespace {

using std::chrono::milliseconds;

std::vector<milliseconds> Delays(Backoff& backoff, int attempts) {
  std::vector<milliseconds> delays;
  for (int attempt = 0; attempt < attempts; ++attempt) {
    delays.push_back(backoff.Delay(attempt));
  }
  return delays;
}

TEST(BackoffTest, DoublesFromTheMinimumWithJitterInTheUpperHalf) {
  Backoff backoff(milliseconds(250), milliseconds(15000), 42);
  milliseconds ceiling(250);
  for (int attempt = 0; attempt < 6; ++attempt) {
    const milliseconds delay = backoff.Delay(attempt);
    EXPECT_GE(delay, ceiling / 2) << "attempt " << attempt;
    EXPECT_LE(delay, ceiling) << "attempt " << attempt;
    ceiling *= 2;
  }
}

TEST(BackoffTest, StaysWithinTheMaximumHoweverManyAttempts) {
  Backoff backoff(milliseconds(250), milliseconds(15000), 7);
  for (const int attempt : {7, 16, 17, 63, 1000, 1 << 30}) {
    const milliseconds delay = backoff.Delay(attempt);
    EXPECT_GE(delay, milliseconds(7500)) << "attempt " << attempt;
    EXPECT_LE(delay, milliseconds(15000)) << "attempt " << attempt;
  }
}

TEST(BackoffTest, TheSameSeedGivesTheSameDelaysAndAnotherSeedOthers) {
  Backoff first(milliseconds(250), milliseconds(15000), 1234);
  Backoff again(milliseconds(250), milliseconds(15000), 1234);
  Backoff other(milliseconds(250), milliseconds(15000), 4321);
  const auto delays = Delays(first, 12);
  EXPECT_EQ(delays, Delays(again, 12));
  EXPECT_NE(delays, Delays(other, 12));
}

TEST(BackoffTest, JittersSoAFleetDoesNotReconnectInStep) {
  Backoff backoff(milliseconds(1000), milliseconds(1000), 99);
  const auto delays = Delays(backoff, 20);
  EXPECT_NE(std::count(delays.begin(), delays.end(), delays.front()), 20);
}

TEST(BackoffTest, NeverZeroEvenWithATinyMinimum) {
  Backoff backoff(milliseconds(0), milliseconds(0), 3);
  EXPECT_EQ(backoff.Delay(0), milliseconds(1));
  EXPECT_EQ(backoff.Delay(5), milliseconds(1));
  Backoff one(milliseconds(1), milliseconds(1), 3);
  EXPECT_EQ(one.Delay(0), milliseconds(1));
}

}  // namespace
}  // namespace perch::mqtt
