// Thin RAII wrappers over the SQLite C API shared by the components that keep
// state in SQLite (the outbox, the hub's registry index and fleet state), so
// each opens databases the same way: WAL, a busy timeout, errors as Status.
//
// Threading: a SqliteDb is used by one thread at a time (callers hold their
// own mutex); SQLite itself is built thread-safe.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/status.h"

struct sqlite3;
struct sqlite3_stmt;

namespace perch {

class SqliteStatement;

class SqliteDb {
 public:
  // Opens (creating) `path` in WAL mode with synchronous=`synchronous`
  // ("NORMAL" or "FULL") and runs `schema` (idempotent DDL).
  // Unavailable, naming the file, when it cannot be opened or is not a
  // database.
  static Result<std::unique_ptr<SqliteDb>> Open(const std::filesystem::path& path,
                                                std::string_view synchronous,
                                                std::string_view schema);
  ~SqliteDb();
  SqliteDb(const SqliteDb&) = delete;
  SqliteDb& operator=(const SqliteDb&) = delete;

  // Runs statements without results (BEGIN, COMMIT, DDL).
  Status Exec(std::string_view sql);
  // Internal naming `what` and SQLite's message unless `result` is
  // SQLITE_OK / SQLITE_DONE / SQLITE_ROW.
  Status Check(int result, std::string_view what) const;
  int64_t Changes() const;
  int64_t LastInsertRowId() const;
  sqlite3* get() const { return db_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  SqliteDb(sqlite3* db, std::filesystem::path path) : db_(db), path_(std::move(path)) {}
  sqlite3* db_;
  std::filesystem::path path_;
};

// A prepared statement, kept for reuse; reset after each Run or Step loop.
class SqliteStatement {
 public:
  SqliteStatement(const SqliteDb& db, const char* sql);
  ~SqliteStatement();
  SqliteStatement(const SqliteStatement&) = delete;
  SqliteStatement& operator=(const SqliteStatement&) = delete;

  bool valid() const { return statement_ != nullptr; }
  SqliteStatement& Bind(int index, std::string_view text);
  SqliteStatement& BindBlob(int index, std::string_view bytes);
  SqliteStatement& Bind(int index, int64_t value);
  SqliteStatement& BindNull(int index);

  // Advances to the next row: true with a row, false when done (or on an
  // error, which Finish reports).
  bool Step();
  std::string Text(int column) const;
  int64_t Int(int column) const;
  bool IsNull(int column) const;
  // Resets for the next use and returns the outcome of the last Step.
  Status Finish(std::string_view what);
  // Steps to completion (for statements without rows), then Finish.
  Status Run(std::string_view what);

 private:
  const SqliteDb& db_;
  sqlite3_stmt* statement_ = nullptr;
  int last_result_ = 0;
};

}  // namespace perch
