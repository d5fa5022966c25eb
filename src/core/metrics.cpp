#include "core/metrics.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace perch {
namespace {

std::string EscapeLabelValue(const std::string& value) {
  std::string escaped;
  escaped.reserve(value.size());
  for (char c : value) {
    if (c == '\\' || c == '"') {
      escaped += '\\';
      escaped += c;
    } else if (c == '\n') {
      escaped += "\\n";
    } else {
      escaped += c;
    }
  }
  return escaped;
}

std::string RenderLabels(const MetricLabels& labels, const std::string& extra = {}) {
  if (labels.empty() && extra.empty()) {
    return {};
  }
  std::string out = "{";
  for (const auto& [key, value] : labels) {
    if (out.size() > 1) {
      out += ',';
    }
    out += fmt::format("{}=\"{}\"", key, EscapeLabelValue(value));
  }
  if (!extra.empty()) {
    if (out.size() > 1) {
      out += ',';
    }
    out += extra;
  }
  out += '}';
  return out;
}

}  // namespace

Histogram::Histogram(std::vector<double> upper_bounds)
    : upper_bounds_(std::move(upper_bounds)),
      bucket_counts_(std::make_unique<std::atomic<uint64_t>[]>(upper_bounds_.size() + 1)) {}

void Histogram::Observe(double value) {
  const auto bucket = static_cast<size_t>(
      std::lower_bound(upper_bounds_.begin(), upper_bounds_.end(), value) - upper_bounds_.begin());
  bucket_counts_[bucket].fetch_add(1, std::memory_order_relaxed);
  const double micros = std::max(0.0, value) * 1e6;
  sum_micros_.fetch_add(static_cast<uint64_t>(std::llround(micros)), std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::Read() const {
  Snapshot snapshot;
  snapshot.upper_bounds = upper_bounds_;
  uint64_t running = 0;
  for (size_t i = 0; i <= upper_bounds_.size(); ++i) {
    running += bucket_counts_[i].load(std::memory_order_relaxed);
    snapshot.cumulative_counts.push_back(running);
  }
  snapshot.sum = static_cast<double>(sum_micros_.load(std::memory_order_relaxed)) / 1e6;
  // The +Inf bucket is the count: one read, so the exposition stays consistent.
  snapshot.count = running;
  return snapshot;
}

std::vector<double> LatencyBucketsSeconds() {
  return {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
          0.05,    0.1,    0.25,    0.5,    1.0,   2.5,    5.0,   10.0};
}

Counter& MetricsRegistry::GetCounter(const std::string& name, const std::string& help,
                                     const MetricLabels& labels) {
  MutexLock lock(mutex_);
  auto& family = counters_[name];
  family.help = help;
  auto& series = family.series[labels];
  if (!series) {
    series = std::make_unique<Counter>();
  }
  return *series;
}

Gauge& MetricsRegistry::GetGauge(const std::string& name, const std::string& help,
                                 const MetricLabels& labels) {
  MutexLock lock(mutex_);
  auto& family = gauges_[name];
  family.help = help;
  auto& series = family.series[labels];
  if (!series) {
    series = std::make_unique<Gauge>();
  }
  return *series;
}

Histogram& MetricsRegistry::GetHistogram(const std::string& name, const std::string& help,
                                         const MetricLabels& labels,
                                         const std::vector<double>& upper_bounds) {
  MutexLock lock(mutex_);
  auto& family = histograms_[name];
  family.help = help;
  auto& series = family.series[labels];
  if (!series) {
    series = std::make_unique<Histogram>(upper_bounds);
  }
  return *series;
}

std::string MetricsRegistry::RenderPrometheus() const {
  MutexLock lock(mutex_);
  std::string out;
  for (const auto& [name, family] : counters_) {
    out += fmt::format("# HELP {} {}\n# TYPE {} counter\n", name, family.help, name);
    for (const auto& [labels, counter] : family.series) {
      out += fmt::format("{}{} {}\n", name, RenderLabels(labels), counter->Value());
    }
  }
  for (const auto& [name, family] : gauges_) {
    out += fmt::format("# HELP {} {}\n# TYPE {} gauge\n", name, family.help, name);
    for (const auto& [labels, gauge] : family.series) {
      out += fmt::format("{}{} {}\n", name, RenderLabels(labels), gauge->Value());
    }
  }
  for (const auto& [name, family] : histograms_) {
    out += fmt::format("# HELP {} {}\n# TYPE {} histogram\n", name, family.help, name);
    for (const auto& [labels, histogram] : family.series) {
      const auto snapshot = histogram->Read();
      for (size_t i = 0; i < snapshot.upper_bounds.size(); ++i) {
        out += fmt::format("{}_bucket{} {}\n", name,
                           RenderLabels(labels, fmt::format("le=\"{}\"", snapshot.upper_bounds[i])),
                           snapshot.cumulative_counts[i]);
      }
      out += fmt::format("{}_bucket{} {}\n", name, RenderLabels(labels, "le=\"+Inf\""),
                         snapshot.count);
      out += fmt::format("{}_sum{} {}\n", name, RenderLabels(labels), snapshot.sum);
      out += fmt::format("{}_count{} {}\n", name, RenderLabels(labels), snapshot.count);
    }
  }
  return out;
}

}  // namespace perch
