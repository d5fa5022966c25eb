#include "fleet/metrics_store.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

namespace perch {
namespace {

// Figures are stored as integers (the database layer binds integers and
// text): latencies in microseconds, CPU in tenths of a percent,
// temperatures in millidegrees. Rows of resolution 0 are as sent; others
// are rolled up into buckets of that many seconds.
constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS model_samples(
  at INTEGER NOT NULL, resolution INTEGER NOT NULL, device TEXT NOT NULL,
  location TEXT NOT NULL, model TEXT NOT NULL, version INTEGER NOT NULL,
  requests INTEGER NOT NULL, failures INTEGER NOT NULL,
  p50_us INTEGER NOT NULL, p99_us INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS model_samples_by_time ON model_samples(at);
CREATE INDEX IF NOT EXISTS model_samples_by_model ON model_samples(model, version, at);
CREATE INDEX IF NOT EXISTS model_samples_by_device ON model_samples(device, at);
CREATE TABLE IF NOT EXISTS vitals_samples(
  at INTEGER NOT NULL, resolution INTEGER NOT NULL, device TEXT NOT NULL,
  location TEXT NOT NULL, cpu_permille INTEGER NOT NULL,
  memory_used INTEGER NOT NULL, memory_total INTEGER NOT NULL,
  disk_used INTEGER NOT NULL, disk_total INTEGER NOT NULL, temperature_milli INTEGER);
CREATE INDEX IF NOT EXISTS vitals_samples_by_time ON vitals_samples(at);
CREATE INDEX IF NOT EXISTS vitals_samples_by_device ON vitals_samples(device, at);
)sql";

int64_t Micros(double ms) { return std::llround(std::clamp(ms, 0.0, 1e9) * 1000.0); }
double Millis(int64_t us) { return static_cast<double>(us) / 1000.0; }

std::string DeviceList(const std::vector<std::string>& devices) {
  return nlohmann::json(devices).dump();
}

}  // namespace

MetricsStore::MetricsStore(MetricsStoreOptions options, std::unique_ptr<SqliteDb> db)
    : options_(std::move(options)), db_(std::move(db)) {}

Result<std::unique_ptr<MetricsStore>> MetricsStore::Open(MetricsStoreOptions options) {
  PERCH_ASSIGN_OR_RETURN(auto db, SqliteDb::Open({.path = options.database, .schema = kSchema}));
  // The fleet store's thread checkpoints the file; not inside a write here.
  PERCH_RETURN_IF_ERROR(
      db->Exec("PRAGMA wal_autocheckpoint=0", "leave checkpoints to the fleet store"));
  return std::unique_ptr<MetricsStore>(new MetricsStore(std::move(options), std::move(db)));
}

Status MetricsStore::Record(const std::string& device, const std::string& location,
                            const HeartbeatMetrics& metrics) {
  const int64_t now = options_.clock.UnixSeconds();
  std::lock_guard lock(mutex_);
  PERCH_ASSIGN_OR_RETURN(SqliteTransaction transaction, db_->Begin());
  for (const ModelMetrics& model : metrics.models) {
    PERCH_ASSIGN_OR_RETURN(
        SqliteStatement insert,
        db_->Prepare("INSERT INTO model_samples(at, resolution, device, location, model, version, "
                     "requests, failures, p50_us, p99_us) VALUES(?, 0, ?, ?, ?, ?, ?, ?, ?, ?)"));
    insert.Bind(1, now)
        .Bind(2, device)
        .Bind(3, location)
        .Bind(4, model.name)
        .Bind(5, model.version)
        .Bind(6, model.requests)
        .Bind(7, model.failures)
        .Bind(8, Micros(model.p50_ms))
        .Bind(9, Micros(model.p99_ms));
    PERCH_RETURN_IF_ERROR(insert.Run("store a model sample"));
  }
  const DeviceVitals& vitals = metrics.vitals;
  PERCH_ASSIGN_OR_RETURN(
      SqliteStatement insert,
      db_->Prepare("INSERT INTO vitals_samples(at, resolution, device, location, cpu_permille, "
                   "memory_used, memory_total, disk_used, disk_total, temperature_milli) "
                   "VALUES(?, 0, ?, ?, ?, ?, ?, ?, ?, ?)"));
  insert.Bind(1, now)
      .Bind(2, device)
      .Bind(3, location)
      .Bind(4, std::llround(std::clamp(vitals.cpu_percent, 0.0, 100.0) * 10.0))
      .Bind(5, vitals.memory_used_bytes)
      .Bind(6, vitals.memory_total_bytes)
      .Bind(7, vitals.disk_used_bytes)
      .Bind(8, vitals.disk_total_bytes);
  if (vitals.temperature_celsius) {
    insert.Bind(9, std::llround(*vitals.temperature_celsius * 1000.0));
  } else {
    insert.BindNull(9);
  }
  PERCH_RETURN_IF_ERROR(insert.Run("store a vitals sample"));
  if (now - last_rollup_ >= 60) {
    PERCH_RETURN_IF_ERROR(RollUp(now));
    last_rollup_ = now;
  }
  return transaction.Commit();
}

Status MetricsStore::RollUp(int64_t now) {
  const int64_t raw_before = now - options_.raw_retention.count();
  const int64_t bucket = std::max<int64_t>(1, options_.rollup.count());
  // Whole buckets only, so a bucket is rolled up once.
  const int64_t cut = raw_before - raw_before % bucket;
  PERCH_ASSIGN_OR_RETURN(
      SqliteStatement models,
      db_->Prepare("INSERT INTO model_samples(at, resolution, device, location, model, version, "
                   "requests, failures, p50_us, p99_us) "
                   "SELECT at - at % ?1, ?1, device, MAX(location), model, version, "
                   "SUM(requests), SUM(failures), "
                   "SUM(p50_us * requests) / MAX(SUM(requests), 1), MAX(p99_us) "
                   "FROM model_samples WHERE resolution = 0 AND at < ?2 "
                   "GROUP BY at - at % ?1, device, model, version"));
  models.Bind(1, bucket).Bind(2, cut);
  PERCH_RETURN_IF_ERROR(models.Run("roll up model samples"));
  PERCH_ASSIGN_OR_RETURN(
      SqliteStatement vitals,
      db_->Prepare("INSERT INTO vitals_samples(at, resolution, device, location, cpu_permille, "
                   "memory_used, memory_total, disk_used, disk_total, temperature_milli) "
                   "SELECT at - at % ?1, ?1, device, MAX(location), AVG(cpu_permille), "
                   "AVG(memory_used), MAX(memory_total), AVG(disk_used), MAX(disk_total), "
                   "AVG(temperature_milli) "
                   "FROM vitals_samples WHERE resolution = 0 AND at < ?2 "
                   "GROUP BY at - at % ?1, device"));
  vitals.Bind(1, bucket).Bind(2, cut);
  PERCH_RETURN_IF_ERROR(vitals.Run("roll up vitals samples"));
  for (const char* table : {"model_samples", "vitals_samples"}) {
    PERCH_ASSIGN_OR_RETURN(SqliteStatement raw, db_->Prepare(std::string("DELETE FROM ") + table +
                                                             " WHERE resolution = 0 AND at < ?"));
    raw.Bind(1, cut);
    PERCH_RETURN_IF_ERROR(raw.Run("drop rolled-up samples"));
    PERCH_ASSIGN_OR_RETURN(SqliteStatement old,
                           db_->Prepare(std::string("DELETE FROM ") + table + " WHERE at < ?"));
    old.Bind(1, now - options_.retention.count());
    PERCH_RETURN_IF_ERROR(old.Run("drop samples past retention"));
  }
  return Status::Ok();
}

Result<MetricsPage> MetricsStore::Query(const MetricsQuery& query) const {
  if (query.from < 0) {
    return InvalidArgument("from: must be unix seconds, not negative");
  }
  if (query.to < query.from) {
    return InvalidArgument("to: must not be before from");
  }
  if (query.to - query.from > kMaxMetricsRange) {
    return InvalidArgument("from: the range may span at most " +
                           std::to_string(kMaxMetricsRange / 86400) +
                           " days; ask for several pages");
  }
  if (query.limit < 1 || query.limit > kMaxMetricsPage) {
    return InvalidArgument("limit: must be between 1 and " + std::to_string(kMaxMetricsPage));
  }
  MetricsPage page;
  std::lock_guard lock(mutex_);
  // ?N = '' matches everything: one statement for every filter.
  PERCH_ASSIGN_OR_RETURN(
      SqliteStatement models,
      db_->Prepare("SELECT at, device, location, model, version, requests, failures, p50_us, "
                   "p99_us FROM model_samples WHERE at >= ?1 AND at <= ?2 "
                   "AND (?3 = '' OR device = ?3) AND (?4 = '' OR location = ?4) "
                   "AND (?5 = '' OR model = ?5) AND (?6 < 0 OR version = ?6) "
                   "ORDER BY at, device, model, version LIMIT ?7"));
  models.Bind(1, query.from)
      .Bind(2, query.to)
      .Bind(3, query.device)
      .Bind(4, query.location)
      .Bind(5, query.model)
      .Bind(6, query.version.value_or(-1))
      .Bind(7, query.limit);
  while (models.Step()) {
    page.models.push_back(ModelPoint{.at = models.Int(0),
                                     .device = models.Text(1),
                                     .location = models.Text(2),
                                     .metrics = ModelMetrics{.name = models.Text(3),
                                                             .version = models.Int(4),
                                                             .requests = models.Int(5),
                                                             .failures = models.Int(6),
                                                             .p50_ms = Millis(models.Int(7)),
                                                             .p99_ms = Millis(models.Int(8))}});
  }
  PERCH_RETURN_IF_ERROR(models.Finish("read model samples"));
  // A page that fills a series ends before the last second it reached, so
  // the next page (from that second) repeats nothing and loses nothing; a
  // second holding a whole page is kept, and the next page moves past it.
  const auto next_of = [&](const auto& points) -> std::optional<int64_t> {
    if (static_cast<int64_t>(points.size()) < query.limit) {
      return std::nullopt;
    }
    const int64_t last = points.back().at;
    return points.front().at == last ? last + 1 : last;
  };
  page.next_from = next_of(page.models);
  if (query.model.empty()) {
    PERCH_ASSIGN_OR_RETURN(
        SqliteStatement vitals,
        db_->Prepare("SELECT at, device, location, cpu_permille, memory_used, memory_total, "
                     "disk_used, disk_total, temperature_milli FROM vitals_samples "
                     "WHERE at >= ?1 AND at <= ?2 AND (?3 = '' OR device = ?3) "
                     "AND (?4 = '' OR location = ?4) ORDER BY at, device LIMIT ?5"));
    vitals.Bind(1, query.from)
        .Bind(2, query.to)
        .Bind(3, query.device)
        .Bind(4, query.location)
        .Bind(5, query.limit);
    while (vitals.Step()) {
      DeviceVitals read{.cpu_percent = static_cast<double>(vitals.Int(3)) / 10.0,
                        .memory_used_bytes = vitals.Int(4),
                        .memory_total_bytes = vitals.Int(5),
                        .disk_used_bytes = vitals.Int(6),
                        .disk_total_bytes = vitals.Int(7),
                        .temperature_celsius = {}};
      if (!vitals.IsNull(8)) {
        read.temperature_celsius = static_cast<double>(vitals.Int(8)) / 1000.0;
      }
      page.vitals.push_back(VitalsPoint{.at = vitals.Int(0),
                                        .device = vitals.Text(1),
                                        .location = vitals.Text(2),
                                        .vitals = read});
    }
    PERCH_RETURN_IF_ERROR(vitals.Finish("read vitals samples"));
    if (const auto next = next_of(page.vitals)) {
      page.next_from = page.next_from ? std::min(*page.next_from, *next) : *next;
    }
  }
  if (page.next_from) {
    const int64_t cut = *page.next_from;
    std::erase_if(page.models, [&](const ModelPoint& point) { return point.at >= cut; });
    std::erase_if(page.vitals, [&](const VitalsPoint& point) { return point.at >= cut; });
  }
  return page;
}

Result<WindowFigures> MetricsStore::Window(const std::string& model, int64_t version,
                                           const std::vector<std::string>& devices, int64_t from,
                                           int64_t to) const {
  std::lock_guard lock(mutex_);
  PERCH_ASSIGN_OR_RETURN(
      SqliteStatement sums,
      db_->Prepare("SELECT SUM(requests), SUM(failures), SUM(p99_us * requests) "
                   "FROM model_samples WHERE model = ?1 AND version = ?2 AND at >= ?3 AND at < ?4 "
                   "AND device IN (SELECT value FROM json_each(?5))"));
  sums.Bind(1, model).Bind(2, version).Bind(3, from).Bind(4, to).Bind(5, DeviceList(devices));
  WindowFigures figures;
  if (sums.Step() && !sums.IsNull(0)) {
    figures.requests = sums.Int(0);
    figures.failures = sums.Int(1);
    figures.p99_ms =
        figures.requests == 0 ? 0 : Millis(sums.Int(2)) / static_cast<double>(figures.requests);
  }
  PERCH_RETURN_IF_ERROR(sums.Finish("sum a window of model samples"));
  return figures;
}

Result<std::optional<int64_t>> MetricsStore::PreviousVersion(
    const std::string& model, int64_t version, const std::vector<std::string>& devices,
    int64_t before) const {
  std::lock_guard lock(mutex_);
  PERCH_ASSIGN_OR_RETURN(
      SqliteStatement newest,
      db_->Prepare("SELECT MAX(version) FROM model_samples WHERE model = ?1 AND version < ?2 "
                   "AND at < ?3 AND device IN (SELECT value FROM json_each(?4))"));
  newest.Bind(1, model).Bind(2, version).Bind(3, before).Bind(4, DeviceList(devices));
  std::optional<int64_t> found;
  if (newest.Step() && !newest.IsNull(0)) {
    found = newest.Int(0);
  }
  PERCH_RETURN_IF_ERROR(newest.Finish("find the version a canary replaced"));
  return found;
}

}  // namespace perch
