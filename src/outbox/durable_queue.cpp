#include "outbox/durable_queue.h"

#include <fmt/format.h>
#include <sqlite3.h>

#include <bit>
#include <optional>

#include "core/enum_names.h"
#include "core/thread_annotations.h"

namespace perch {
namespace {

constexpr EnumNames<OverflowPolicy, 2> kPolicyNames{{
    {OverflowPolicy::kRejectNew, "reject-new"},
    {OverflowPolicy::kDropOldest, "drop-oldest"},
}};
constexpr EnumNames<SyncMode, 2> kSyncNames{{
    {SyncMode::kNormal, "normal"},
    {SyncMode::kFull, "full"},
}};

int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A prepared statement, reset after each use.
class Statement {
 public:
  Statement(sqlite3* db, const char* sql) {
    sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &statement_, nullptr);
  }
  ~Statement() { sqlite3_finalize(statement_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  bool valid() const { return statement_ != nullptr; }
  sqlite3_stmt* get() const { return statement_; }
  void BindText(int index, std::string_view text) {
    sqlite3_bind_text(statement_, index, text.data(), static_cast<int>(text.size()),
                      SQLITE_TRANSIENT);
  }
  void BindBlob(int index, std::string_view bytes) {
    // An empty view may have no data pointer, which SQLite would bind as NULL.
    sqlite3_bind_blob(statement_, index, bytes.empty() ? "" : bytes.data(),
                      static_cast<int>(bytes.size()), SQLITE_TRANSIENT);
  }
  void BindInt(int index, int64_t value) { sqlite3_bind_int64(statement_, index, value); }
  std::string ColumnBytes(int column) const {
    const auto* data = static_cast<const char*>(sqlite3_column_blob(statement_, column));
    return data ? std::string(data, static_cast<size_t>(sqlite3_column_bytes(statement_, column)))
                : std::string();
  }
  // Runs to completion; the SQLite result code.
  int Run() {
    int result = SQLITE_ROW;
    while (result == SQLITE_ROW) {
      result = sqlite3_step(statement_);
    }
    sqlite3_reset(statement_);
    sqlite3_clear_bindings(statement_);
    return result;
  }
  void Reset() {
    sqlite3_reset(statement_);
    sqlite3_clear_bindings(statement_);
  }

 private:
  sqlite3_stmt* statement_ = nullptr;
};

}  // namespace

std::string_view ToString(OverflowPolicy policy) { return EnumToString(kPolicyNames, policy); }
std::optional<OverflowPolicy> OverflowPolicyFromString(std::string_view name) {
  return EnumFromString(kPolicyNames, name);
}
std::string_view ToString(SyncMode mode) { return EnumToString(kSyncNames, mode); }
std::optional<SyncMode> SyncModeFromString(std::string_view name) {
  return EnumFromString(kSyncNames, name);
}

class DurableQueue::Impl {
 public:
  Impl(const DurableQueueOptions& options, sqlite3* db, MetricsRegistry& metrics)
      : options_(options),
        db_(db),
        append_(db,
                "INSERT INTO records(destination, key, payload, attributes, created_ms) "
                "VALUES (?, ?, ?, ?, ?)"),
        read_(db,
              "SELECT sequence, destination, key, payload, attributes, created_ms FROM records "
              "WHERE sequence > ? ORDER BY sequence LIMIT ?"),
        remove_(db, "DELETE FROM records WHERE sequence = ?"),
        drop_oldest_(db,
                     "DELETE FROM records WHERE sequence = (SELECT MIN(sequence) FROM records)"),
        expire_(db, "DELETE FROM records WHERE created_ms < ?"),
        find_claim_(db, "SELECT fingerprint, key, arrival FROM claims WHERE slot = ?"),
        touch_claim_(db, "UPDATE claims SET arrival = ? WHERE slot = ?"),
        put_claim_(db,
                   "INSERT OR REPLACE INTO claims(slot, fingerprint, key, arrival) "
                   "VALUES (?, ?, ?, ?)"),
        depth_(metrics.GetGauge("perch_queue_depth", "Records waiting in a durable queue",
                                {{"queue", options.name}})),
        dropped_(metrics.GetCounter("perch_queue_dropped_total",
                                    "Records dropped to make room (drop-oldest policy)",
                                    {{"queue", options.name}})),
        rejected_(
            metrics.GetCounter("perch_queue_rejected_total",
                               "Records refused because the queue was full (reject-new policy)",
                               {{"queue", options.name}})),
        expired_(metrics.GetCounter("perch_queue_expired_total",
                                    "Records removed undelivered past their time-to-live",
                                    {{"queue", options.name}})) {}

  ~Impl() { sqlite3_close_v2(db_); }

  Status Initialize() {
    MutexLock lock(mutex_);
    if (!append_.valid() || !read_.valid() || !remove_.valid() || !drop_oldest_.valid() ||
        !expire_.valid() || !find_claim_.valid() || !touch_claim_.valid() || !put_claim_.valid()) {
      return Unavailable(fmt::format("{} is not a perch queue database: {}", options_.path.string(),
                                     sqlite3_errmsg(db_)));
    }
    Statement count(db_, "SELECT COUNT(*) FROM records");
    if (sqlite3_step(count.get()) != SQLITE_ROW) {
      return Unavailable(fmt::format("cannot count the records of {}: {}", options_.path.string(),
                                     sqlite3_errmsg(db_)));
    }
    size_ = sqlite3_column_int64(count.get(), 0);
    depth_.Set(size_);
    Statement last_arrival(db_, "SELECT COALESCE(MAX(arrival), 0) FROM claims");
    if (sqlite3_step(last_arrival.get()) != SQLITE_ROW) {
      return Unavailable(fmt::format("cannot read the claims of {}: {}", options_.path.string(),
                                     sqlite3_errmsg(db_)));
    }
    last_arrival_ = sqlite3_column_int64(last_arrival.get(), 0);
    return Status::Ok();
  }

  Result<int64_t> Append(std::string_view destination, std::string_view key,
                         std::string_view payload, std::string_view attributes) {
    MutexLock lock(mutex_);
    return AppendLocked(destination, key, payload, attributes);
  }

  Result<AppendedRecord> AppendClaimed(std::string_view destination, std::string_view key,
                                       std::string_view payload, std::string_view attributes,
                                       const DeliveryClaim& claim) {
    MutexLock lock(mutex_);
    // SQLite stores 64-bit integers signed; the bits are what matter.
    const auto fingerprint = std::bit_cast<int64_t>(claim.fingerprint);
    const int64_t arrival = last_arrival_ + 1;
    std::optional<std::string> first_key;
    // A claim that cannot be read counts as none: answering a request twice
    // (under two keys) beats dropping one.
    if (claim.may_repeat) {
      find_claim_.BindInt(1, claim.slot);
      if (sqlite3_step(find_claim_.get()) == SQLITE_ROW &&
          sqlite3_column_int64(find_claim_.get(), 0) == fingerprint &&
          sqlite3_column_int64(find_claim_.get(), 2) > arrival - claim.window) {
        first_key = find_claim_.ColumnBytes(1);
      }
      find_claim_.Reset();
    }
    PERCH_RETURN_IF_ERROR(Check(sqlite3_exec(db_, "BEGIN", nullptr, nullptr, nullptr), "begin"));
    const int64_t size_before = size_;
    auto rollback = [&](const Status& status) REQUIRES(mutex_) {
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      size_ = size_before;
      depth_.Set(size_);
      return status;
    };
    AppendedRecord appended;
    if (first_key) {
      // A repeat stays the latest claim on its slot: it may come once more
      // if this acknowledgement is lost too.
      touch_claim_.BindInt(1, arrival);
      touch_claim_.BindInt(2, claim.slot);
      if (const Status touched = Check(touch_claim_.Run(), "remember a claim"); !touched.ok()) {
        return rollback(touched);
      }
      appended = AppendedRecord{.sequence = 0, .key = std::move(*first_key), .repeat = true};
    } else {
      const auto sequence = AppendLocked(destination, key, payload, attributes);
      if (!sequence.ok()) {
        return rollback(sequence.status());
      }
      put_claim_.BindInt(1, claim.slot);
      put_claim_.BindInt(2, fingerprint);
      put_claim_.BindText(3, key);
      put_claim_.BindInt(4, arrival);
      if (const Status put = Check(put_claim_.Run(), "remember a claim"); !put.ok()) {
        return rollback(put);
      }
      appended = AppendedRecord{.sequence = *sequence, .key = std::string(key), .repeat = false};
    }
    if (const Status committed =
            Check(sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr), "commit");
        !committed.ok()) {
      return rollback(committed);
    }
    last_arrival_ = arrival;
    return appended;
  }

  Result<int64_t> AppendLocked(std::string_view destination, std::string_view key,
                               std::string_view payload, std::string_view attributes)
      REQUIRES(mutex_) {
    if (size_ >= options_.max_records) {
      if (options_.overflow == OverflowPolicy::kRejectNew) {
        rejected_.Increment();
        return ResourceExhausted(fmt::format(
            "the {} holds {} records, its limit; the record was refused", options_.name, size_));
      }
      PERCH_RETURN_IF_ERROR(Check(drop_oldest_.Run(), "drop the oldest record"));
      size_ -= sqlite3_changes(db_);
      dropped_.Increment();
    }
    append_.BindText(1, destination);
    append_.BindText(2, key);
    append_.BindBlob(3, payload);
    append_.BindBlob(4, attributes);
    append_.BindInt(5, NowUnixMs());
    PERCH_RETURN_IF_ERROR(Check(append_.Run(), "append a record"));
    ++size_;
    depth_.Set(size_);
    return sqlite3_last_insert_rowid(db_);
  }

  Result<std::vector<QueuedRecord>> Read(int64_t after, size_t limit) {
    MutexLock lock(mutex_);
    if (options_.ttl.count() > 0) {
      expire_.BindInt(1, NowUnixMs() - std::chrono::milliseconds(options_.ttl).count());
      PERCH_RETURN_IF_ERROR(Check(expire_.Run(), "expire old records"));
      const int expired = sqlite3_changes(db_);
      if (expired > 0) {
        size_ -= expired;
        expired_.Increment(static_cast<uint64_t>(expired));
        depth_.Set(size_);
      }
    }
    std::vector<QueuedRecord> records;
    read_.BindInt(1, after);
    read_.BindInt(2, static_cast<int64_t>(limit));
    int result = SQLITE_ROW;
    while ((result = sqlite3_step(read_.get())) == SQLITE_ROW) {
      records.push_back(QueuedRecord{
          .sequence = sqlite3_column_int64(read_.get(), 0),
          .destination = read_.ColumnBytes(1),
          .key = read_.ColumnBytes(2),
          .payload = read_.ColumnBytes(3),
          .attributes = read_.ColumnBytes(4),
          .created_unix_ms = sqlite3_column_int64(read_.get(), 5),
      });
    }
    read_.Reset();
    PERCH_RETURN_IF_ERROR(Check(result, "read records"));
    return records;
  }

  Status Remove(const std::vector<int64_t>& sequences) {
    MutexLock lock(mutex_);
    // One transaction for the lot: one disk flush however many were delivered.
    PERCH_RETURN_IF_ERROR(Check(sqlite3_exec(db_, "BEGIN", nullptr, nullptr, nullptr), "begin"));
    for (const int64_t sequence : sequences) {
      remove_.BindInt(1, sequence);
      const int result = remove_.Run();
      if (result != SQLITE_DONE) {
        sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
        return Check(result, "remove a record");
      }
      size_ -= sqlite3_changes(db_);
    }
    PERCH_RETURN_IF_ERROR(Check(sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr), "commit"));
    depth_.Set(size_);
    return Status::Ok();
  }

  int64_t Size() const {
    MutexLock lock(mutex_);
    return size_;
  }

 private:
  Status Check(int result, std::string_view doing) const {
    if (result == SQLITE_DONE || result == SQLITE_OK || result == SQLITE_ROW) {
      return Status::Ok();
    }
    const auto code =
        result == SQLITE_FULL ? StatusCode::kResourceExhausted : StatusCode::kUnavailable;
    return Status(code, fmt::format("the {} at {} could not {}: {}", options_.name,
                                    options_.path.string(), doing, sqlite3_errmsg(db_)));
  }

  const DurableQueueOptions options_;
  mutable Mutex mutex_;
  sqlite3* const db_;
  Statement append_ GUARDED_BY(mutex_);
  Statement read_ GUARDED_BY(mutex_);
  Statement remove_ GUARDED_BY(mutex_);
  Statement drop_oldest_ GUARDED_BY(mutex_);
  Statement expire_ GUARDED_BY(mutex_);
  Statement find_claim_ GUARDED_BY(mutex_);
  Statement touch_claim_ GUARDED_BY(mutex_);
  Statement put_claim_ GUARDED_BY(mutex_);
  int64_t last_arrival_ GUARDED_BY(mutex_) = 0;  // the arrival number of the latest claim
  int64_t size_ GUARDED_BY(mutex_) = 0;
  Gauge& depth_;
  Counter& dropped_;
  Counter& rejected_;
  Counter& expired_;
};

Result<std::unique_ptr<DurableQueue>> DurableQueue::Open(const DurableQueueOptions& options,
                                                         MetricsRegistry& metrics) {
  if (options.max_records < 1) {
    return InvalidArgument(fmt::format("the {} needs room for at least one record", options.name));
  }
  std::error_code error;
  std::filesystem::create_directories(options.path.parent_path(), error);
  sqlite3* db = nullptr;
  const int opened =
      sqlite3_open_v2(options.path.c_str(), &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (opened != SQLITE_OK) {
    const std::string message = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close_v2(db);
    return Unavailable(
        fmt::format("cannot open the {} at {}: {}", options.name, options.path.string(), message));
  }
  const std::string setup = fmt::format(
      "PRAGMA journal_mode=WAL; PRAGMA synchronous={}; PRAGMA busy_timeout=5000;"
      "CREATE TABLE IF NOT EXISTS records("
      "  sequence INTEGER PRIMARY KEY AUTOINCREMENT,"
      "  destination TEXT NOT NULL, key TEXT NOT NULL,"
      "  payload BLOB NOT NULL, attributes BLOB NOT NULL, created_ms INTEGER NOT NULL);"
      "CREATE TABLE IF NOT EXISTS claims("
      "  slot INTEGER PRIMARY KEY, fingerprint INTEGER NOT NULL, key TEXT NOT NULL,"
      "  arrival INTEGER NOT NULL);",
      options.sync == SyncMode::kFull ? "FULL" : "NORMAL");
  char* setup_error = nullptr;
  if (sqlite3_exec(db, setup.c_str(), nullptr, nullptr, &setup_error) != SQLITE_OK) {
    const std::string message = setup_error ? setup_error : sqlite3_errmsg(db);
    sqlite3_free(setup_error);
    sqlite3_close_v2(db);
    return Unavailable(fmt::format("{} is not usable as the {}: {}", options.path.string(),
                                   options.name, message));
  }
  auto impl = std::make_unique<Impl>(options, db, metrics);
  PERCH_RETURN_IF_ERROR(impl->Initialize());
  return std::unique_ptr<DurableQueue>(new DurableQueue(std::move(impl)));
}

DurableQueue::DurableQueue(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DurableQueue::~DurableQueue() = default;

Result<int64_t> DurableQueue::Append(std::string_view destination, std::string_view key,
                                     std::string_view payload, std::string_view attributes) {
  return impl_->Append(destination, key, payload, attributes);
}
Result<AppendedRecord> DurableQueue::AppendClaimed(std::string_view destination,
                                                   std::string_view key, std::string_view payload,
                                                   std::string_view attributes,
                                                   const DeliveryClaim& claim) {
  return impl_->AppendClaimed(destination, key, payload, attributes, claim);
}
Result<std::vector<QueuedRecord>> DurableQueue::Read(int64_t after, size_t limit) {
  return impl_->Read(after, limit);
}
Status DurableQueue::Remove(const std::vector<int64_t>& sequences) {
  return impl_->Remove(sequences);
}
int64_t DurableQueue::Size() const { return impl_->Size(); }

}  // namespace perch
