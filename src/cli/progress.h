// A transfer progress bar (bytes, percent, rate) on a terminal; nothing
// when stdout is not one, where the command prints a one-line summary.
//
// Threading: one thread; Update is called from the transfer's callback.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace perch::cli {

class ProgressBar {
 public:
  explicit ProgressBar(std::string label);
  ~ProgressBar();  // ends the bar's line, if one was drawn
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  void Update(uint64_t done, uint64_t total);

 private:
  const std::string label_;
  const bool enabled_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
};

// "1.2 MB", "340 B": for people, not for parsing.
std::string HumanBytes(uint64_t bytes);

}  // namespace perch::cli
