// MetricsSampler: the agent's side of device metrics. Each Sample reads
// the model manager's counters and histograms and the kernel's figures
// (/proc/stat, /proc/meminfo, statvfs of --state, /sys/class/thermal) and
// answers what changed since the previous Sample.
//
// Threading: not thread-safe; the fleet agent's thread owns it.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "fleet/device_metrics.h"
#include "models/model_manager.h"

namespace perch {

class MetricsSampler {
 public:
  // `state`: the folder whose filesystem is reported as the device's disk;
  // `proc` and `sys` are where the kernel's files are (tests pass others).
  explicit MetricsSampler(std::filesystem::path state, std::filesystem::path proc = "/proc",
                          std::filesystem::path sys = "/sys");

  HeartbeatMetrics Sample(const ModelManager& models);

 private:
  struct ModelCounts {
    uint64_t requests = 0;
    uint64_t failures = 0;
    std::vector<uint64_t> queue;    // cumulative bucket counts
    std::vector<uint64_t> compute;  // cumulative bucket counts
  };
  DeviceVitals ReadVitals();

  const std::filesystem::path state_;
  const std::filesystem::path proc_;
  const std::filesystem::path sys_;
  std::map<std::pair<std::string, int64_t>, ModelCounts> previous_;
  uint64_t previous_busy_ = 0;
  uint64_t previous_total_ = 0;
  std::chrono::steady_clock::time_point previous_at_{};
  bool sampled_ = false;
};

}  // namespace perch
