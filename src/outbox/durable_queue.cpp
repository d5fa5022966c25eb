#include "outbox/durable_queue.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <limits>
#include <mutex>
#include <optional>

#include "core/enum_names.h"
#include "core/sqlite.h"
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

constexpr const char* kSchema =
    "CREATE TABLE IF NOT EXISTS records("
    "  sequence INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  destination TEXT NOT NULL, key TEXT NOT NULL,"
    "  payload BLOB NOT NULL, attributes BLOB NOT NULL, created_ms INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS claims("
    "  slot INTEGER PRIMARY KEY, fingerprint INTEGER NOT NULL, key TEXT NOT NULL,"
    "  arrival INTEGER NOT NULL);";

constexpr std::string_view kAppend =
    "INSERT INTO records(destination, key, payload, attributes, created_ms) "
    "VALUES (?, ?, ?, ?, ?)";
constexpr std::string_view kRead =
    "SELECT sequence, destination, key, payload, attributes, created_ms FROM records "
    "WHERE sequence > ? ORDER BY sequence LIMIT ?";
constexpr std::string_view kRemove = "DELETE FROM records WHERE sequence = ?";
constexpr std::string_view kDropOldest =
    "DELETE FROM records WHERE sequence = (SELECT MIN(sequence) FROM records)";
constexpr std::string_view kExpire = "DELETE FROM records WHERE created_ms < ?";
constexpr std::string_view kShiftStamps =
    "UPDATE records SET created_ms = created_ms + ? WHERE created_ms BETWEEN ? AND ?";
// Wall-clock steps smaller than this are drift, not a jump.
constexpr int64_t kJumpToleranceMs = 2000;
constexpr std::string_view kFindClaim =
    "SELECT fingerprint, key, arrival FROM claims WHERE slot = ?";
constexpr std::string_view kTouchClaim = "UPDATE claims SET arrival = ? WHERE slot = ?";
constexpr std::string_view kPutClaim =
    "INSERT OR REPLACE INTO claims(slot, fingerprint, key, arrival) VALUES (?, ?, ?, ?)";

}  // namespace

std::string_view ToString(OverflowPolicy policy) { return EnumToString(kPolicyNames, policy); }
std::optional<OverflowPolicy> OverflowPolicyFromString(std::string_view name) {
  return EnumFromString(kPolicyNames, name);
}
std::string_view ToString(SyncMode mode) { return EnumToString(kSyncNames, mode); }
std::optional<SyncMode> SyncModeFromString(std::string_view name) {
  return EnumFromString(kSyncNames, name);
}

namespace {

SqliteOptions QueueDatabase(const DurableQueueOptions& options) {
  return {.path = options.path,
          .full_sync = options.sync == SyncMode::kFull,
          .vfs = options.vfs,
          .schema = kSchema,
          .busy_timeout = std::chrono::seconds(5)};
}

}  // namespace

class DurableQueue::Impl {
 public:
  Impl(const DurableQueueOptions& options, std::unique_ptr<SqliteDb> db, MetricsRegistry& metrics)
      : options_(options),
        db_(std::move(db)),
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
                                    {{"queue", options.name}})),
        clock_jumps_(
            metrics.GetCounter("perch_queue_clock_jumps_total",
                               "Wall-clock jumps the queue corrected its records' stamps for",
                               {{"queue", options.name}})) {}

  Status Initialize() {
    MutexLock lock(mutex_);
    return InitializeLocked();
  }

  Status InitializeLocked() REQUIRES(mutex_) {
    // Prepared now, so a file with other tables of the same names is
    // refused at open rather than on the first record.
    for (const std::string_view sql :
         {kAppend, kRead, kRemove, kDropOldest, kExpire, kFindClaim, kTouchClaim, kPutClaim}) {
      PERCH_RETURN_IF_ERROR(Named(db_->Prepare(sql).status()));
    }
    PERCH_ASSIGN_OR_RETURN(size_, SelectInt("SELECT COUNT(*) FROM records", "count the records"));
    depth_.Set(size_);
    PERCH_ASSIGN_OR_RETURN(last_arrival_, SelectInt("SELECT COALESCE(MAX(arrival), 0) FROM claims",
                                                    "read the claims"));
    return Status::Ok();
  }

  Result<int64_t> Append(std::string_view destination, std::string_view key,
                         std::string_view payload, std::string_view attributes) {
    MutexLock lock(mutex_);
    PERCH_RETURN_IF_ERROR(Named(Recovered()));
    auto appended = AppendLocked(destination, key, payload, attributes);
    if (appended.ok()) {
      Synced();
    }
    return appended;
  }

  Result<AppendedRecord> AppendClaimed(std::string_view destination, std::string_view key,
                                       std::string_view payload, std::string_view attributes,
                                       const DeliveryClaim& claim) {
    MutexLock lock(mutex_);
    PERCH_RETURN_IF_ERROR(Named(Recovered()));
    const int64_t arrival = last_arrival_ + 1;
    const std::optional<std::string> first_key = FirstDelivery(claim, arrival);
    const int64_t size_before = size_;
    auto appended =
        AppendClaimedLocked(destination, key, payload, attributes, claim, arrival, first_key);
    if (!appended.ok()) {
      // Rolled back: nothing was appended or dropped.
      size_ = size_before;
      depth_.Set(size_);
      return appended.status();
    }
    last_arrival_ = arrival;
    Synced();
    return appended;
  }

  Result<std::vector<QueuedRecord>> Read(int64_t after, size_t limit) {
    MutexLock lock(mutex_);
    PERCH_RETURN_IF_ERROR(Named(Recovered()));
    if (options_.ttl.count() > 0) {
      PERCH_ASSIGN_OR_RETURN(SqliteStatement expire, Named(db_->Prepare(kExpire)));
      PERCH_ASSIGN_OR_RETURN(const int64_t now, StampLocked());
      expire.Bind(1, now - std::chrono::milliseconds(options_.ttl).count());
      PERCH_RETURN_IF_ERROR(Named(expire.Run("expire old records")));
      const int64_t expired = db_->Changes();
      if (expired > 0) {
        size_ -= expired;
        expired_.Increment(static_cast<uint64_t>(expired));
        depth_.Set(size_);
      }
    }
    PERCH_ASSIGN_OR_RETURN(SqliteStatement read, Named(db_->Prepare(kRead)));
    read.Bind(1, after).Bind(2, static_cast<int64_t>(limit));
    std::vector<QueuedRecord> records;
    while (read.Step()) {
      records.push_back(QueuedRecord{
          .sequence = read.Int(0),
          .destination = read.Text(1),
          .key = read.Text(2),
          .payload = read.Blob(3),
          .attributes = read.Blob(4),
          .created_unix_ms = read.Int(5),
      });
    }
    PERCH_RETURN_IF_ERROR(Named(read.Finish("read records")));
    return records;
  }

  Status Remove(const std::vector<int64_t>& sequences) {
    MutexLock lock(mutex_);
    PERCH_RETURN_IF_ERROR(Named(Recovered()));
    const Status removed = RemoveCounted(sequences);
    if (removed.ok()) {
      Synced();
    }
    return removed;
  }

  Result<int64_t> AppendUnsynced(std::string_view destination, std::string_view key,
                                 std::string_view payload, std::string_view attributes) {
    MutexLock lock(mutex_);
    PERCH_RETURN_IF_ERROR(Named(Recovered()));
    PERCH_RETURN_IF_ERROR(FlushCommits(false));
    auto appended = AppendLocked(destination, key, payload, attributes);
    const Status restored = FlushCommits(true);
    if (!appended.ok()) {
      return appended;
    }
    unsynced_ = true;
    PERCH_RETURN_IF_ERROR(restored);
    return appended;
  }

  Status RemoveUnsynced(const std::vector<int64_t>& sequences) {
    MutexLock lock(mutex_);
    PERCH_RETURN_IF_ERROR(Named(Recovered()));
    PERCH_RETURN_IF_ERROR(FlushCommits(false));
    const Status removed = RemoveCounted(sequences);
    const Status restored = FlushCommits(true);
    PERCH_RETURN_IF_ERROR(removed);
    unsynced_ = true;
    return restored;
  }

  Status Sync() {
    MutexLock lock(mutex_);
    PERCH_RETURN_IF_ERROR(Named(Recovered()));
    if (!unsynced_ || options_.sync != SyncMode::kFull) {
      return Status::Ok();
    }
    PERCH_RETURN_IF_ERROR(Named(db_->SyncWal()));
    unsynced_ = false;
    return Status::Ok();
  }

  int64_t Size() const {
    MutexLock lock(mutex_);
    return size_;
  }

  bool RejectsNew() const {
    MutexLock lock(mutex_);
    return options_.overflow == OverflowPolicy::kRejectNew && size_ >= options_.max_records;
  }

 private:
  // After a failed flush the log may have a gap that SQLite counts as
  // written (SqliteDb::SyncWal), and nothing committed after it would
  // survive a power loss. The file is opened again instead, which recovers
  // it up to the gap (what was flushed), and the counts are read again from
  // what it holds; until that succeeds every operation fails.
  Status Recovered() REQUIRES(mutex_) {
    if (db_ != nullptr && db_->failed_flush().ok()) {
      return Status::Ok();
    }
    db_.reset();
    PERCH_ASSIGN_OR_RETURN(db_, SqliteDb::Open(QueueDatabase(options_)));
    unsynced_ = true;
    return InitializeLocked();
  }

  // Says which queue a failure is about: the outbox and the inbox share code.
  Status Named(const Status& status) const {
    return status.ok()
               ? status
               : Status(status.code(), fmt::format("the {}: {}", options_.name, status.message()));
  }
  template <typename T>
  Result<T> Named(Result<T> result) const {
    if (!result.ok()) {
      return Named(result.status());
    }
    return result;
  }

  Result<int64_t> SelectInt(std::string_view sql, std::string_view what) REQUIRES(mutex_) {
    PERCH_ASSIGN_OR_RETURN(SqliteStatement select, Named(db_->Prepare(sql)));
    if (!select.Step()) {
      PERCH_RETURN_IF_ERROR(Named(select.Finish(what)));
      return Named(Internal(fmt::format("cannot {}: no row", what)));
    }
    const int64_t value = select.Int(0);
    PERCH_RETURN_IF_ERROR(Named(select.Finish(what)));
    return value;
  }

  // The key of the first delivery when `claim` repeats the last claim on its
  // slot within its window. A claim that cannot be read counts as none:
  // answering a request twice (under two keys) beats dropping one.
  std::optional<std::string> FirstDelivery(const DeliveryClaim& claim, int64_t arrival)
      REQUIRES(mutex_) {
    if (!claim.may_repeat) {
      return std::nullopt;
    }
    auto find = db_->Prepare(kFindClaim);
    if (!find.ok()) {
      return std::nullopt;
    }
    find->Bind(1, claim.slot);
    // SQLite stores 64-bit integers signed; the bits are what matter.
    if (find->Step() && find->Int(0) == std::bit_cast<int64_t>(claim.fingerprint) &&
        find->Int(2) > arrival - claim.window) {
      return find->Text(1);
    }
    return std::nullopt;
  }

  Result<AppendedRecord> AppendClaimedLocked(std::string_view destination, std::string_view key,
                                             std::string_view payload, std::string_view attributes,
                                             const DeliveryClaim& claim, int64_t arrival,
                                             const std::optional<std::string>& first_key)
      REQUIRES(mutex_) {
    PERCH_ASSIGN_OR_RETURN(SqliteTransaction transaction, Named(db_->Begin()));
    AppendedRecord appended;
    if (first_key) {
      // A repeat stays the latest claim on its slot: it may come once more
      // if this acknowledgement is lost too.
      PERCH_ASSIGN_OR_RETURN(SqliteStatement touch, Named(db_->Prepare(kTouchClaim)));
      PERCH_RETURN_IF_ERROR(
          Named(touch.Bind(1, arrival).Bind(2, claim.slot).Run("remember a claim")));
      appended = AppendedRecord{.sequence = 0, .key = *first_key, .repeat = true};
    } else {
      PERCH_ASSIGN_OR_RETURN(const int64_t sequence,
                             AppendLocked(destination, key, payload, attributes));
      PERCH_ASSIGN_OR_RETURN(SqliteStatement put, Named(db_->Prepare(kPutClaim)));
      PERCH_RETURN_IF_ERROR(Named(put.Bind(1, claim.slot)
                                      .Bind(2, std::bit_cast<int64_t>(claim.fingerprint))
                                      .Bind(3, key)
                                      .Bind(4, arrival)
                                      .Run("remember a claim")));
      appended = AppendedRecord{.sequence = sequence, .key = std::string(key), .repeat = false};
    }
    PERCH_RETURN_IF_ERROR(Named(transaction.Commit()));
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
      PERCH_ASSIGN_OR_RETURN(SqliteStatement drop, Named(db_->Prepare(kDropOldest)));
      PERCH_RETURN_IF_ERROR(Named(drop.Run("drop the oldest record")));
      size_ -= db_->Changes();
      dropped_.Increment();
    }
    PERCH_ASSIGN_OR_RETURN(const int64_t now, StampLocked());
    PERCH_ASSIGN_OR_RETURN(SqliteStatement append, Named(db_->Prepare(kAppend)));
    append.Bind(1, destination)
        .Bind(2, key)
        .BindBlob(3, payload)
        .BindBlob(4, attributes)
        .Bind(5, now);
    PERCH_RETURN_IF_ERROR(Named(append.Run("append a record")));
    stamped_low_ = std::min(stamped_low_, now);
    stamped_high_ = std::max(stamped_high_, now);
    ++size_;
    depth_.Set(size_);
    return db_->LastInsertRowId();
  }

  // The wall clock now. When it jumped against the monotonic clock since the
  // last look, the stamps given in this run (stamped_low_..stamped_high_)
  // move by the jump first: they were given on the same wrong (or right)
  // clock, so their ages stay what really passed. Stamps of earlier runs are
  // left alone: that run's clock is not known to have been wrong.
  Result<int64_t> StampLocked() REQUIRES(mutex_) {
    const int64_t wall = options_.clock.UnixMillis();
    const auto monotonic =
        options_.monotonic ? options_.monotonic() : std::chrono::steady_clock::now();
    if (anchored_) {
      const int64_t expected = anchor_wall_ + std::chrono::duration_cast<std::chrono::milliseconds>(
                                                  monotonic - anchor_monotonic_)
                                                  .count();
      const int64_t jump = wall - expected;
      if ((jump > kJumpToleranceMs || jump < -kJumpToleranceMs) && stamped_low_ <= stamped_high_) {
        PERCH_ASSIGN_OR_RETURN(SqliteStatement shift, Named(db_->Prepare(kShiftStamps)));
        shift.Bind(1, jump).Bind(2, stamped_low_).Bind(3, stamped_high_);
        PERCH_RETURN_IF_ERROR(Named(shift.Run("correct the records' stamps for a clock jump")));
        stamped_low_ += jump;
        stamped_high_ += jump;
        clock_jumps_.Increment();
      }
    }
    anchored_ = true;
    anchor_wall_ = wall;
    anchor_monotonic_ = monotonic;
    return wall;
  }

  // RemoveLocked, with the size and depth kept right when it fails.
  Status RemoveCounted(const std::vector<int64_t>& sequences) REQUIRES(mutex_) {
    const int64_t size_before = size_;
    const Status removed = RemoveLocked(sequences);
    if (!removed.ok()) {
      size_ = size_before;
    }
    depth_.Set(size_);
    return removed;
  }

  // Whether the next commits flush the disk; false only between the two
  // calls of an unsynced write (every other commit must flush). A no-op
  // unless SyncMode::kFull.
  Status FlushCommits(bool flush) REQUIRES(mutex_) {
    return options_.sync == SyncMode::kFull ? Named(db_->SetFullSync(flush)) : Status::Ok();
  }

  // A commit with synchronous=FULL flushed the log, and with it every
  // unsynced removal before it.
  void Synced() REQUIRES(mutex_) {
    if (options_.sync == SyncMode::kFull) {
      unsynced_ = false;
    }
  }

  Status RemoveLocked(const std::vector<int64_t>& sequences) REQUIRES(mutex_) {
    // One transaction for the lot: one disk flush however many were delivered.
    PERCH_ASSIGN_OR_RETURN(SqliteTransaction transaction, Named(db_->Begin()));
    PERCH_ASSIGN_OR_RETURN(SqliteStatement remove, Named(db_->Prepare(kRemove)));
    for (const int64_t sequence : sequences) {
      PERCH_RETURN_IF_ERROR(Named(remove.Bind(1, sequence).Run("remove a record")));
      size_ -= db_->Changes();
    }
    return Named(transaction.Commit());
  }

  const DurableQueueOptions options_;
  mutable Mutex mutex_;
  std::unique_ptr<SqliteDb> db_ GUARDED_BY(mutex_);  // null while it cannot be opened again
  int64_t last_arrival_ GUARDED_BY(mutex_) = 0;      // the arrival number of the latest claim
  int64_t size_ GUARDED_BY(mutex_) = 0;
  bool unsynced_ GUARDED_BY(mutex_) = false;  // an unsynced commit not flushed yet
  // The last look at both clocks, and the stamps given in this run.
  bool anchored_ GUARDED_BY(mutex_) = false;
  int64_t anchor_wall_ GUARDED_BY(mutex_) = 0;
  std::chrono::steady_clock::time_point anchor_monotonic_ GUARDED_BY(mutex_){};
  int64_t stamped_low_ GUARDED_BY(mutex_) = std::numeric_limits<int64_t>::max();
  int64_t stamped_high_ GUARDED_BY(mutex_) = std::numeric_limits<int64_t>::min();
  Gauge& depth_;
  Counter& dropped_;
  Counter& rejected_;
  Counter& expired_;
  Counter& clock_jumps_;
};

Result<std::unique_ptr<DurableQueue>> DurableQueue::Open(const DurableQueueOptions& options,
                                                         MetricsRegistry& metrics) {
  if (options.max_records < 1) {
    return InvalidArgument(fmt::format("the {} needs room for at least one record", options.name));
  }
  auto db = SqliteDb::Open(QueueDatabase(options));
  if (!db.ok()) {
    return Status(db.status().code(),
                  fmt::format("the {}: {}", options.name, db.status().message()));
  }
  auto impl = std::make_unique<Impl>(options, std::move(db).value(), metrics);
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
Result<int64_t> DurableQueue::AppendUnsynced(std::string_view destination, std::string_view key,
                                             std::string_view payload,
                                             std::string_view attributes) {
  return impl_->AppendUnsynced(destination, key, payload, attributes);
}
Status DurableQueue::RemoveUnsynced(const std::vector<int64_t>& sequences) {
  return impl_->RemoveUnsynced(sequences);
}
Status DurableQueue::Sync() { return impl_->Sync(); }
int64_t DurableQueue::Size() const { return impl_->Size(); }

bool DurableQueue::RejectsNew() const { return impl_->RejectsNew(); }

}  // namespace perch
