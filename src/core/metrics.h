// Metrics registry rendered in the Prometheus text exposition format.
// Counters and histograms are lock-free to update; registration and rendering
// take the registry's mutex. A metric, once registered, lives as long as the
// registry, so callers may keep the reference. Thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/thread_annotations.h"

namespace perch {

using MetricLabels = std::vector<std::pair<std::string, std::string>>;

class Counter {
 public:
  void Increment(uint64_t by = 1) { value_.fetch_add(by, std::memory_order_relaxed); }
  uint64_t Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

class Gauge {
 public:
  void Set(int64_t value) { value_.store(value, std::memory_order_relaxed); }
  int64_t Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> value_{0};
};

class Histogram {
 public:
  // `upper_bounds` ascending; an implicit +Inf bucket follows them.
  explicit Histogram(std::vector<double> upper_bounds);

  void Observe(double value);

  struct Snapshot {
    std::vector<double> upper_bounds;
    std::vector<uint64_t> cumulative_counts;  // one per bound, then +Inf
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot Read() const;

 private:
  std::vector<double> upper_bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> bucket_counts_;  // size upper_bounds_ + 1
  std::atomic<uint64_t> sum_micros_{0};  // integral so that updates stay lock-free
};

// Buckets from 50 µs to 10 s, for latencies in seconds.
std::vector<double> LatencyBucketsSeconds();

class MetricsRegistry {
 public:
  Counter& GetCounter(const std::string& name, const std::string& help, const MetricLabels& labels);
  Gauge& GetGauge(const std::string& name, const std::string& help, const MetricLabels& labels);
  Histogram& GetHistogram(const std::string& name, const std::string& help,
                          const MetricLabels& labels, const std::vector<double>& upper_bounds);

  // Every registered metric in the Prometheus text format (version 0.0.4).
  std::string RenderPrometheus() const;

 private:
  template <typename Metric>
  struct Family {
    std::string help;
    std::map<MetricLabels, std::unique_ptr<Metric>> series;
  };

  mutable Mutex mutex_;
  std::map<std::string, Family<Counter>> counters_ GUARDED_BY(mutex_);
  std::map<std::string, Family<Gauge>> gauges_ GUARDED_BY(mutex_);
  std::map<std::string, Family<Histogram>> histograms_ GUARDED_BY(mutex_);
};

}  // namespace perch
