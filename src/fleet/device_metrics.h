// What a device measures between two heartbeats (docs/fleet.md "Device
// metrics"): per model version, requests, failures and latency quantiles
// over the interval; per device, CPU, memory, the disk of --state and a
// temperature where the kernel exposes one. The hub keeps them as a time
// series (MetricsStore) and judges canaries on them (canary_analysis.h).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace perch {

struct ModelMetrics {
  std::string name{};
  int64_t version = 0;
  int64_t requests = 0;  // received in the interval, successful or not
  int64_t failures = 0;
  // Quantiles of queue + compute time in the interval, in milliseconds,
  // read off the models' histograms (so to within a bucket); 0 without
  // requests.
  double p50_ms = 0;
  double p99_ms = 0;
};

struct DeviceVitals {
  double cpu_percent = 0;  // busy share of all CPUs over the interval, 0..100
  int64_t memory_used_bytes = 0;
  int64_t memory_total_bytes = 0;
  int64_t disk_used_bytes = 0;  // of the filesystem holding --state
  int64_t disk_total_bytes = 0;
  std::optional<double> temperature_celsius{};  // hottest thermal zone
};

struct HeartbeatMetrics {
  int64_t interval_seconds = 0;  // since the previous sample
  std::vector<ModelMetrics> models{};
  DeviceVitals vitals{};
};

}  // namespace perch
