// WallClock: the time of day a stateful component stamps records with and
// measures ages against (record time-to-live, upload and heartbeat times,
// canary health). Components take one through their Options instead of
// reading std::chrono::system_clock themselves, so tests move time forward
// instead of sleeping.
//
// A default-constructed WallClock reads the system clock; ManualClock::AsWallClock()
// gives one that reads a ManualClock.
//
// Threading: WallClock is a small value, safe to copy and to call from any
// thread. ManualClock is thread-safe; the WallClock it hands out refers to it and
// must not outlive it.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>

namespace perch {

class WallClock {
 public:
  using TimePoint = std::chrono::system_clock::time_point;

  // The system's wall clock.
  WallClock() = default;
  // Reads `now` instead (a ManualClock, a benchmark's simulated time).
  explicit WallClock(std::function<TimePoint()> now) : now_(std::move(now)) {}

  TimePoint Now() const { return now_ ? now_() : std::chrono::system_clock::now(); }
  int64_t UnixSeconds() const {
    return std::chrono::duration_cast<std::chrono::seconds>(Now().time_since_epoch()).count();
  }
  int64_t UnixMillis() const {
    return std::chrono::duration_cast<std::chrono::milliseconds>(Now().time_since_epoch()).count();
  }

 private:
  std::function<TimePoint()> now_;  // empty: the system clock
};

// A clock that stands still until told to move, for tests.
class ManualClock {
 public:
  explicit ManualClock(
      WallClock::TimePoint start = WallClock::TimePoint(std::chrono::seconds(1000)))
      : now_(start.time_since_epoch().count()) {}

  WallClock::TimePoint Now() const {
    return WallClock::TimePoint(WallClock::TimePoint::duration(now_.load()));
  }
  void Set(WallClock::TimePoint now) { now_.store(now.time_since_epoch().count()); }
  void Advance(WallClock::TimePoint::duration by) { now_.fetch_add(by.count()); }
  // A WallClock reading this one; it must not outlive this ManualClock.
  WallClock AsWallClock() const {
    return WallClock([this] { return Now(); });
  }

 private:
  std::atomic<WallClock::TimePoint::rep> now_;
};

}  // namespace perch
