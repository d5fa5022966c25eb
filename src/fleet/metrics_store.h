// MetricsStore: the hub's time series of what devices measure (device
// metrics in heartbeats, docs/fleet.md "Device metrics"), kept in the
// fleet database (tables of their own, a connection of their own; the
// fleet store's thread checkpoints the file).
//
// Retention and downsampling: each heartbeat's figures are kept as sent
// for `raw_retention` (6 h by default, what a canary is judged on and
// the dashboard's charts show closely), then rolled up into buckets of
// `rollup_seconds` (5 min: requests and failures summed, p50 weighted by
// requests, p99 the highest, vitals averaged) kept for `retention` (7 d).
// Past that they are deleted. At a 10 s heartbeat a device costs about
// 2,200 rows for 6 h plus 2,000 for the week, per model and for vitals.
//
// Queries are bounded: a range of at most kMaxMetricsRange and at most
// kMaxMetricsPage rows per series and page, so no request can make the hub
// read the whole table.
//
// Threading: every public method is thread-safe (one mutex).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/sqlite.h"
#include "core/status.h"
#include "fleet/device_metrics.h"

namespace perch {

inline constexpr int64_t kMaxMetricsRange = 7 * 24 * 3600;  // seconds
inline constexpr int64_t kMaxMetricsPage = 1000;            // rows per series
inline constexpr int64_t kDefaultMetricsPage = 500;

struct MetricsStoreOptions {
  std::filesystem::path database;  // the fleet database, DATA/fleet.db
  WallClock clock{};
  std::chrono::seconds raw_retention{6 * 3600};
  std::chrono::seconds rollup{300};
  std::chrono::seconds retention{7 * 24 * 3600};
};

// Which rows a query wants; empty strings match everything.
struct MetricsQuery {
  std::string device{};
  std::string location{};
  std::string model{};
  std::optional<int64_t> version{};
  int64_t from = 0;  // unix seconds, inclusive
  int64_t to = 0;    // unix seconds, inclusive
  int64_t limit = kDefaultMetricsPage;
};

struct ModelPoint {
  int64_t at = 0;  // unix seconds
  std::string device{};
  std::string location{};
  ModelMetrics metrics{};
};

struct VitalsPoint {
  int64_t at = 0;
  std::string device{};
  std::string location{};
  DeviceVitals vitals{};
};

// One page of a query: ascending by time. `next_from`, when set, is the
// `from` of the next page (a series reached the limit).
struct MetricsPage {
  std::vector<ModelPoint> models{};
  std::vector<VitalsPoint> vitals{};
  std::optional<int64_t> next_from{};
};

// Totals over a window, for canary analysis.
struct WindowFigures {
  int64_t requests = 0;
  int64_t failures = 0;
  double p99_ms = 0;  // request-weighted mean of the samples' p99
  double FailureRate() const {
    return requests == 0 ? 0 : static_cast<double>(failures) / static_cast<double>(requests);
  }
};

class MetricsStore {
 public:
  // Unavailable when the database cannot be opened.
  static Result<std::unique_ptr<MetricsStore>> Open(MetricsStoreOptions options);

  // Stores one heartbeat's figures at the clock's now; rolls up and drops
  // old rows at most once a minute. Unavailable when it cannot be written.
  Status Record(const std::string& device, const std::string& location,
                const HeartbeatMetrics& metrics);

  // InvalidArgument (naming the parameter) for a range past
  // kMaxMetricsRange, `to` before `from`, or a limit outside 1..kMaxMetricsPage.
  // Vitals are included unless the query names a model.
  Result<MetricsPage> Query(const MetricsQuery& query) const;

  // Sums of `model` version `version` on `devices` over [from, to).
  Result<WindowFigures> Window(const std::string& model, int64_t version,
                               const std::vector<std::string>& devices, int64_t from,
                               int64_t to) const;
  // The newest version of `model` below `version` that `devices` reported
  // before `before`: what a canary replaced. Nullopt when none.
  Result<std::optional<int64_t>> PreviousVersion(const std::string& model, int64_t version,
                                                 const std::vector<std::string>& devices,
                                                 int64_t before) const;

 private:
  MetricsStore(MetricsStoreOptions options, std::unique_ptr<SqliteDb> db);
  Status RollUp(int64_t now);  // requires mutex_

  const MetricsStoreOptions options_;
  mutable std::mutex mutex_;
  std::unique_ptr<SqliteDb> db_;  // guarded by mutex_
  int64_t last_rollup_ = 0;       // guarded by mutex_
};

}  // namespace perch
