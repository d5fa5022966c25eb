// The one wrapper over the SQLite C API, for every component that keeps its
// state in SQLite (the outbox, the hub's registry index, the fleet store):
// each opens its database the same way (WAL, a busy timeout), prepares each
// statement once and reuses it, writes in RAII transactions, and reports
// errors as Status naming the file.
//
// Error codes: a full disk is ResourceExhausted; a database still locked by
// another connection after the busy timeout, a file that cannot be opened,
// read or written, or that is not a database, is Unavailable; a UNIQUE or
// PRIMARY KEY violation is AlreadyExists; anything else (a bug in the SQL) is
// Internal. Messages name the file and what was being done.
//
// Threading: a SqliteDb, and the statements and transactions taken from it,
// are used by one thread at a time (callers hold their own mutex). Other
// connections, in this process or another, may use the same file at once:
// SQLite's locking keeps them consistent.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "core/status.h"

struct sqlite3;
struct sqlite3_stmt;

namespace perch {

class SqliteStatement;
class SqliteTransaction;

struct SqliteOptions {
  std::filesystem::path path{};  // created, with its folder, when missing
  // False: a committed transaction survives the process being killed
  // (synchronous=NORMAL). True: also a power loss, at the price of a disk
  // flush per commit (synchronous=FULL).
  bool full_sync = false;
  // The name of a registered SQLite VFS to open the file through; empty for
  // SQLite's default. Tests pass the fault-injecting one
  // (src/testing/fault_vfs.h).
  std::string vfs{};
  // Idempotent DDL run at open (CREATE TABLE IF NOT EXISTS ...); may be empty.
  std::string schema{};
  // How long a statement waits for another connection's lock before it
  // fails Unavailable.
  std::chrono::milliseconds busy_timeout{5000};
};

class SqliteDb {
 public:
  // Opens (creating) the database in WAL mode and runs the schema.
  // Unavailable, naming the file, when it cannot be opened or created, is
  // not a database, or does not take the schema (another program's file).
  static Result<std::unique_ptr<SqliteDb>> Open(const SqliteOptions& options);
  ~SqliteDb();
  SqliteDb(const SqliteDb&) = delete;
  SqliteDb& operator=(const SqliteDb&) = delete;

  // Runs SQL without results or parameters (pragmas, DDL). `what` says what
  // it does, for the error message.
  Status Exec(std::string_view sql, std::string_view what);

  // The statement for `sql`, prepared on first use and kept for the life of
  // this SqliteDb (a statement run on every heartbeat or record is never
  // parsed again). The handle resets the statement when it goes out of scope.
  // Preparing the same SQL again while a handle is alive gives a separate
  // statement. Unavailable when the SQL does not fit the file's tables.
  Result<SqliteStatement> Prepare(std::string_view sql);

  // Begins a write transaction (BEGIN IMMEDIATE: the write lock is taken
  // now, so waiting for another writer happens here, within the busy
  // timeout). It rolls back unless committed.
  Result<SqliteTransaction> Begin();

  // From now on, commits flush the disk (synchronous=FULL) or leave that to
  // a later flush (NORMAL). For writes that need not survive a power loss
  // until a later step depends on them: that step calls SyncWal first.
  Status SetFullSync(bool full);

  // Flushes the write-ahead log: every transaction committed so far survives
  // a power loss once this returns Ok. Unavailable when the flush fails, and
  // from then on every use of this SqliteDb fails the same way: the kernel
  // may have dropped the log's unflushed pages, leaving a gap that SQLite
  // still counts as written, and anything committed after the gap would be
  // lost with it on a power loss however well flushed. Opening the file
  // again (a restart) recovers the log up to the gap; closing this one
  // leaves the log as it is for that (no checkpoint of what may be gone).
  Status SyncWal();

  // Copies the log into the database file as far as no reader still needs
  // it, without waiting for anyone (a PASSIVE checkpoint; it flushes the log
  // first). A failed flush on the way ends this SqliteDb's use as in SyncWal.
  Status Checkpoint();
  // Ok, or why this SqliteDb is no longer used (SyncWal).
  const Status& failed_flush() const { return failed_flush_; }

  // Rows changed by the last INSERT, UPDATE or DELETE.
  int64_t Changes() const;
  int64_t LastInsertRowId() const;
  const std::filesystem::path& path() const { return path_; }

  // Ok for SQLite's success codes, otherwise the Status described above,
  // naming `what` and the file.
  Status Check(int result, std::string_view what) const;

 private:
  friend class SqliteStatement;
  struct Cached {
    sqlite3_stmt* statement = nullptr;
    bool in_use = false;  // a handle holds it
  };
  // Looks SQL up by string_view without copying it into a std::string.
  struct SqlHash {
    using is_transparent = void;
    size_t operator()(std::string_view sql) const { return std::hash<std::string_view>()(sql); }
  };

  Status Check(int result, std::string_view what, const char* detail) const;
  // After a failed flush (`cause`): see SyncWal.
  void StopAfterFailedFlush(const Status& cause);

  SqliteDb(sqlite3* db, const SqliteOptions& options)
      : db_(db), path_(options.path), busy_timeout_(options.busy_timeout) {}

  sqlite3* db_;
  Status failed_flush_;  // set by the first failed SyncWal, see there
  const std::filesystem::path path_;
  const std::chrono::milliseconds busy_timeout_;
  // Node-based: a handle's pointer to its entry's in_use stays valid.
  std::unordered_map<std::string, Cached, SqlHash, std::equal_to<>> statements_;
};

// A handle on a prepared statement: bind, step through the rows, then Finish
// (or Run, for statements without rows). Binding and column indexes are as
// in SQLite: parameters from 1, columns from 0. A bind error (an index out
// of range, a value too big) is reported by the next Step's Finish.
// Must not outlive its SqliteDb.
class SqliteStatement {
 public:
  SqliteStatement(SqliteStatement&& other) noexcept;
  SqliteStatement& operator=(SqliteStatement&&) = delete;
  SqliteStatement(const SqliteStatement&) = delete;
  SqliteStatement& operator=(const SqliteStatement&) = delete;
  // Resets the statement and clears its bindings, so an early return in a
  // row loop does not keep a read transaction open.
  ~SqliteStatement();

  SqliteStatement& Bind(int index, std::string_view text);
  SqliteStatement& BindBlob(int index, std::string_view bytes);
  SqliteStatement& Bind(int index, int64_t value);
  SqliteStatement& BindNull(int index);

  // Advances to the next row: true with a row, false when done or on an
  // error, which Finish reports.
  bool Step();
  // Columns of the current row. Text and Blob give the bytes as stored.
  std::string Text(int column) const;
  std::string Blob(int column) const { return Text(column); }
  int64_t Int(int column) const;
  bool IsNull(int column) const;
  // Resets for the next use and returns the outcome of the last Step.
  Status Finish(std::string_view what);
  // Steps to completion (for statements without rows), then Finish.
  Status Run(std::string_view what);

 private:
  friend class SqliteDb;
  // `in_use` is the cache entry's flag, or null for a statement this handle
  // owns (the same SQL was already in use).
  SqliteStatement(const SqliteDb& db, sqlite3_stmt* statement, bool* in_use)
      : db_(&db), statement_(statement), in_use_(in_use) {}

  const SqliteDb* db_;
  sqlite3_stmt* statement_;  // null once moved from
  bool* in_use_;
  int bind_error_ = 0;  // the first failed bind's result code, 0 for none
  int last_result_ = 0;
};

// A write transaction; rolls back on destruction unless Commit succeeded.
class SqliteTransaction {
 public:
  SqliteTransaction(SqliteTransaction&& other) noexcept : db_(std::exchange(other.db_, nullptr)) {}
  SqliteTransaction& operator=(SqliteTransaction&&) = delete;
  SqliteTransaction(const SqliteTransaction&) = delete;
  SqliteTransaction& operator=(const SqliteTransaction&) = delete;
  ~SqliteTransaction();

  // On failure the transaction is rolled back.
  Status Commit();

 private:
  friend class SqliteDb;
  explicit SqliteTransaction(SqliteDb& db) : db_(&db) {}
  SqliteDb* db_;  // null once committed, rolled back or moved from
};

}  // namespace perch
