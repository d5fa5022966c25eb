// DurableQueue: a FIFO of records kept in an SQLite database (WAL), the
// store-and-forward queue behind everything the agent must deliver (the
// outbox) and every message it accepted but has not processed yet (the inbox).
//
// A record is durable once Append returns: with SyncMode::kFull (the
// default) it survives a power loss; with kNormal only the process being
// killed (see docs/durability.md). Records leave only by
// Remove (delivered), by the overflow policy, or by expiring.
//
// Threading: every method is thread-safe (one connection, one mutex).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.h"
#include "core/metrics.h"
#include "core/status.h"

namespace perch {

enum class OverflowPolicy { kRejectNew, kDropOldest };
std::string_view ToString(OverflowPolicy policy);
std::optional<OverflowPolicy> OverflowPolicyFromString(std::string_view name);

enum class SyncMode { kNormal, kFull };
std::string_view ToString(SyncMode mode);
std::optional<SyncMode> SyncModeFromString(std::string_view name);

struct DurableQueueOptions {
  std::filesystem::path path;   // the database file; its folder is created
  std::string name = "outbox";  // the "queue" label of its metrics
  int64_t max_records = 100000;
  OverflowPolicy overflow = OverflowPolicy::kRejectNew;
  std::chrono::seconds ttl{0};  // 0: records never expire
  // kFull: an appended or removed record survives a power loss, at the
  // price of a disk flush per transaction. kNormal survives the process
  // being killed only: a power loss may undo the last transactions since
  // SQLite's last checkpoint.
  SyncMode sync = SyncMode::kFull;
  // A registered SQLite VFS to open the file through (tests: fault
  // injection); empty for the default.
  std::string vfs{};
  // Stamps records and decides which are past their time-to-live.
  WallClock clock{};
  // How much time really passed (never steps); empty: steady_clock. When
  // the wall clock jumps against it by more than 2 s (a device that booted
  // in 1970 until NTP answered), the records stamped in this run are moved
  // by the jump, so none expires early or lives on because of it.
  std::function<std::chrono::steady_clock::time_point()> monotonic{};
};

struct QueuedRecord {
  int64_t sequence = 0;     // increases with every append, never reused
  std::string destination;  // where it goes, e.g. an MQTT topic
  std::string key;          // idempotency key: receivers drop repeats of it
  std::string payload;
  std::string attributes;  // what the deliverer needs besides (opaque here)
  int64_t created_unix_ms = 0;
};

// What tells a message its sender may deliver again from a new one (see
// AppendClaimed).
struct DeliveryClaim {
  // Where the sender says "the same message again", e.g. an MQTT packet
  // identifier: a redelivery reuses it, and the sender reuses it for another
  // message only once the first one was acknowledged.
  int64_t slot = 0;
  uint64_t fingerprint = 0;  // of everything the message says
  // False when the message is certainly not a redelivery (e.g. its slot was
  // already used on the same connection).
  bool may_repeat = false;
  // Only the claims of the last `window` messages count: no more than that
  // many can be unacknowledged at the sender at once.
  int64_t window = 1;
};

struct AppendedRecord {
  int64_t sequence = 0;  // 0 for a repeat: nothing was appended
  std::string key;       // for a repeat, the key of the first delivery
  bool repeat = false;
};

class DurableQueue {
 public:
  // Opens or creates the queue. Unavailable when the file cannot be opened
  // or is not a queue database.
  static Result<std::unique_ptr<DurableQueue>> Open(const DurableQueueOptions& options,
                                                    MetricsRegistry& metrics);
  ~DurableQueue();
  DurableQueue(const DurableQueue&) = delete;
  DurableQueue& operator=(const DurableQueue&) = delete;

  // Appends a record and returns its sequence once it is on disk.
  // ResourceExhausted when the queue is full and the policy rejects new
  // records; with kDropOldest the oldest record makes room (and is counted).
  Result<int64_t> Append(std::string_view destination, std::string_view key,
                         std::string_view payload, std::string_view attributes);

  // Like Append, but with SyncMode::kFull the commit does not wait for a
  // disk flush: the record survives the process being killed at once, and a
  // power loss only once Sync (or any later commit) returned. For a record
  // that may be sent on before its flush, because what it came from stays
  // where it was (e.g. the request in the inbox) until Sync holds.
  Result<int64_t> AppendUnsynced(std::string_view destination, std::string_view key,
                                 std::string_view payload, std::string_view attributes);

  // Like Append, and remembers `claim` with the record in the same
  // transaction. When `claim.may_repeat` and the last claim on its slot, among
  // the last `claim.window` claims, has the same fingerprint, the message is a
  // repeat: nothing is appended and the first delivery's key is returned, so a
  // crash between accepting a message and its acknowledgement does not make it
  // two records.
  Result<AppendedRecord> AppendClaimed(std::string_view destination, std::string_view key,
                                       std::string_view payload, std::string_view attributes,
                                       const DeliveryClaim& claim);

  // Up to `limit` records with a sequence above `after`, oldest first.
  // Records past their time-to-live are removed (and counted) instead.
  Result<std::vector<QueuedRecord>> Read(int64_t after, size_t limit);

  // Removes delivered records; unknown sequences are ignored.
  Status Remove(const std::vector<int64_t>& sequences);

  // Like Remove, but with SyncMode::kFull the commit does not wait for a
  // disk flush: the removal survives the process being killed at once, and a
  // power loss only once Sync (or any later commit, which flushes everything
  // before it) returned. For removals whose undoing is harmless until a
  // later step depends on them; that step calls Sync first.
  Status RemoveUnsynced(const std::vector<int64_t>& sequences);

  // Makes every unsynced append and removal so far survive a power loss (a
  // no-op when none waits, and with SyncMode::kNormal, whose every commit may
  // be undone by one). Unavailable when the flush fails: they may then be
  // undone by a power loss, and the step that depended on them must not go
  // ahead.
  Status Sync();

  int64_t Size() const;

  // True when the queue holds its limit and its policy refuses new records:
  // an Append that fails now may be that policy, not the disk.
  bool RejectsNew() const;

 private:
  class Impl;
  explicit DurableQueue(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace perch
