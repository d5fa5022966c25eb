#include "fleet/metrics_sampler.h"

#include <sys/statvfs.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

namespace perch {
namespace {

namespace fs = std::filesystem;

// The upper bound of the bucket holding quantile `q` of the counts that
// went into the histogram between two reads (cumulative counts per bound,
// then +Inf), in seconds; 0 without any.
double Quantile(const std::vector<double>& bounds, const std::vector<uint64_t>& before,
                const std::vector<uint64_t>& after, double q) {
  if (after.empty()) {
    return 0;
  }
  const auto delta = [&](size_t i) {
    const uint64_t old = i < before.size() ? before[i] : 0;
    return after[i] >= old ? after[i] - old : after[i];  // a reset counts from 0
  };
  const uint64_t total = delta(after.size() - 1);
  if (total == 0) {
    return 0;
  }
  const auto rank = static_cast<uint64_t>(std::ceil(q * static_cast<double>(total)));
  for (size_t i = 0; i < bounds.size() && i < after.size(); ++i) {
    if (delta(i) >= rank) {
      return bounds[i];
    }
  }
  return bounds.empty() ? 0 : bounds.back();  // past the last bound: report that bound
}

int64_t MeminfoKib(const std::string& text, std::string_view key) {
  const size_t at = text.find(std::string(key) + ":");
  if (at == std::string::npos) {
    return 0;
  }
  return std::strtoll(text.c_str() + at + key.size() + 1, nullptr, 10);
}

std::string ReadAll(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

MetricsSampler::MetricsSampler(fs::path state, fs::path proc, fs::path sys)
    : state_(std::move(state)), proc_(std::move(proc)), sys_(std::move(sys)) {}

HeartbeatMetrics MetricsSampler::Sample(const ModelManager& models) {
  HeartbeatMetrics metrics;
  const auto now = std::chrono::steady_clock::now();
  metrics.interval_seconds =
      sampled_ ? std::chrono::duration_cast<std::chrono::seconds>(now - previous_at_).count() : 0;
  previous_at_ = now;
  std::map<std::pair<std::string, int64_t>, ModelCounts> current;
  for (const auto& model : models.ServedModels()) {
    const Histogram::Snapshot queue = model->queue_seconds.Read();
    const Histogram::Snapshot compute = model->compute_seconds.Read();
    ModelCounts counts{.requests = model->requests.Value(),
                       .failures = model->failures.Value(),
                       .queue = queue.cumulative_counts,
                       .compute = compute.cumulative_counts};
    const auto key = std::make_pair(model->name(), model->version());
    const auto found = previous_.find(key);
    const ModelCounts before = found == previous_.end() ? ModelCounts{} : found->second;
    const auto since = [](uint64_t after, uint64_t old) {
      return static_cast<int64_t>(after >= old ? after - old : after);
    };
    // Queue and compute quantiles added: an upper estimate of the request's.
    const auto quantile_ms = [&](double q) {
      return 1000.0 * (Quantile(queue.upper_bounds, before.queue, counts.queue, q) +
                       Quantile(compute.upper_bounds, before.compute, counts.compute, q));
    };
    metrics.models.push_back(ModelMetrics{.name = model->name(),
                                          .version = model->version(),
                                          .requests = since(counts.requests, before.requests),
                                          .failures = since(counts.failures, before.failures),
                                          .p50_ms = quantile_ms(0.5),
                                          .p99_ms = quantile_ms(0.99)});
    current[key] = std::move(counts);
  }
  previous_ = std::move(current);
  metrics.vitals = ReadVitals();
  sampled_ = true;
  return metrics;
}

DeviceVitals MetricsSampler::ReadVitals() {
  DeviceVitals vitals;
  // "cpu  user nice system idle iowait irq softirq steal ...": idle and
  // iowait are not busy.
  std::ifstream stat(proc_ / "stat");
  std::string label;
  std::vector<uint64_t> fields;
  if (stat >> label && label == "cpu") {
    std::string line;
    std::getline(stat, line);
    std::istringstream values(line);
    for (uint64_t value = 0; values >> value;) {
      fields.push_back(value);
    }
  }
  if (fields.size() >= 5) {
    uint64_t total = 0;
    for (size_t i = 0; i < std::min<size_t>(fields.size(), 8); ++i) {
      total += fields[i];
    }
    const uint64_t busy = total - fields[3] - fields[4];
    if (sampled_ && total > previous_total_) {
      const uint64_t busy_delta = busy >= previous_busy_ ? busy - previous_busy_ : 0;
      vitals.cpu_percent = std::clamp(
          100.0 * static_cast<double>(busy_delta) / static_cast<double>(total - previous_total_),
          0.0, 100.0);
    }
    previous_busy_ = busy;
    previous_total_ = total;
  }
  const std::string meminfo = ReadAll(proc_ / "meminfo");
  const int64_t total_kib = MeminfoKib(meminfo, "MemTotal");
  const int64_t available_kib = MeminfoKib(meminfo, "MemAvailable");
  vitals.memory_total_bytes = total_kib * 1024;
  vitals.memory_used_bytes = std::max<int64_t>(0, total_kib - available_kib) * 1024;
  struct statvfs disk {};
  if (::statvfs(state_.c_str(), &disk) == 0) {
    const auto block = static_cast<int64_t>(disk.f_frsize);
    vitals.disk_total_bytes = static_cast<int64_t>(disk.f_blocks) * block;
    vitals.disk_used_bytes =
        static_cast<int64_t>(disk.f_blocks - std::min(disk.f_blocks, disk.f_bfree)) * block;
  }
  std::error_code error;
  for (const auto& zone : fs::directory_iterator(sys_ / "class" / "thermal", error)) {
    if (!zone.path().filename().string().starts_with("thermal_zone")) {
      continue;
    }
    std::ifstream in(zone.path() / "temp");
    long long millidegrees = 0;
    if (in >> millidegrees && millidegrees > -50000 && millidegrees < 200000) {
      const double celsius = static_cast<double>(millidegrees) / 1000.0;
      vitals.temperature_celsius = std::max(vitals.temperature_celsius.value_or(celsius), celsius);
    }
  }
  return vitals;
}

}  // namespace perch
