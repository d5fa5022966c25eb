#include "core/sqlite.h"

#include <sqlite3.h>

namespace perch {

Result<std::unique_ptr<SqliteDb>> SqliteDb::Open(const std::filesystem::path& path,
                                                 std::string_view synchronous,
                                                 std::string_view schema) {
  std::error_code error;
  if (path.has_parent_path()) {
    std::filesystem::create_directories(path.parent_path(), error);
  }
  sqlite3* raw = nullptr;
  const int opened =
      sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  std::unique_ptr<SqliteDb> db(new SqliteDb(raw, path));
  if (opened != SQLITE_OK) {
    return Unavailable("cannot open " + path.string() + ": " +
                       (raw ? sqlite3_errmsg(raw) : "out of memory"));
  }
  sqlite3_busy_timeout(raw, 5000);
  const std::string pragmas =
      "PRAGMA journal_mode=WAL; PRAGMA synchronous=" + std::string(synchronous) + ";";
  if (const Status status = db->Exec(pragmas); !status.ok()) {
    return Unavailable(path.string() + " is not a usable database: " + status.message());
  }
  if (const Status status = db->Exec(schema); !status.ok()) {
    return Unavailable(path.string() + " is not a perch database: " + status.message());
  }
  return db;
}

SqliteDb::~SqliteDb() { sqlite3_close_v2(db_); }

Status SqliteDb::Exec(std::string_view sql) {
  char* message = nullptr;
  const int result = sqlite3_exec(db_, std::string(sql).c_str(), nullptr, nullptr, &message);
  if (result != SQLITE_OK) {
    std::string text = message ? message : sqlite3_errstr(result);
    sqlite3_free(message);
    return Internal(text);
  }
  return Status::Ok();
}

Status SqliteDb::Check(int result, std::string_view what) const {
  if (result == SQLITE_OK || result == SQLITE_DONE || result == SQLITE_ROW) {
    return Status::Ok();
  }
  if (result == SQLITE_FULL) {
    return ResourceExhausted("cannot " + std::string(what) + ": the disk holding " +
                             path_.string() + " is full");
  }
  return Internal("cannot " + std::string(what) + " in " + path_.string() + ": " +
                  sqlite3_errmsg(db_));
}

int64_t SqliteDb::Changes() const { return sqlite3_changes(db_); }
int64_t SqliteDb::LastInsertRowId() const { return sqlite3_last_insert_rowid(db_); }

SqliteStatement::SqliteStatement(const SqliteDb& db, const char* sql) : db_(db) {
  sqlite3_prepare_v3(db.get(), sql, -1, SQLITE_PREPARE_PERSISTENT, &statement_, nullptr);
}

SqliteStatement::~SqliteStatement() { sqlite3_finalize(statement_); }

SqliteStatement& SqliteStatement::Bind(int index, std::string_view text) {
  sqlite3_bind_text(statement_, index, text.empty() ? "" : text.data(),
                    static_cast<int>(text.size()), SQLITE_TRANSIENT);
  return *this;
}

SqliteStatement& SqliteStatement::BindBlob(int index, std::string_view bytes) {
  // An empty view may have no data pointer, which SQLite would bind as NULL.
  sqlite3_bind_blob(statement_, index, bytes.empty() ? "" : bytes.data(),
                    static_cast<int>(bytes.size()), SQLITE_TRANSIENT);
  return *this;
}

SqliteStatement& SqliteStatement::Bind(int index, int64_t value) {
  sqlite3_bind_int64(statement_, index, value);
  return *this;
}

SqliteStatement& SqliteStatement::BindNull(int index) {
  sqlite3_bind_null(statement_, index);
  return *this;
}

bool SqliteStatement::Step() {
  last_result_ = statement_ ? sqlite3_step(statement_) : SQLITE_MISUSE;
  return last_result_ == SQLITE_ROW;
}

std::string SqliteStatement::Text(int column) const {
  const auto* data = static_cast<const char*>(sqlite3_column_blob(statement_, column));
  return data ? std::string(data, static_cast<size_t>(sqlite3_column_bytes(statement_, column)))
              : std::string();
}

int64_t SqliteStatement::Int(int column) const { return sqlite3_column_int64(statement_, column); }

bool SqliteStatement::IsNull(int column) const {
  return sqlite3_column_type(statement_, column) == SQLITE_NULL;
}

Status SqliteStatement::Finish(std::string_view what) {
  const int result = last_result_;
  sqlite3_reset(statement_);
  sqlite3_clear_bindings(statement_);
  last_result_ = SQLITE_DONE;
  return db_.Check(result, what);
}

Status SqliteStatement::Run(std::string_view what) {
  while (Step()) {
  }
  return Finish(what);
}

}  // namespace perch
