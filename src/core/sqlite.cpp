#include "core/sqlite.h"

#include <fmt/format.h>
#include <sqlite3.h>

namespace perch {
namespace {

bool Succeeded(int result) {
  return result == SQLITE_OK || result == SQLITE_DONE || result == SQLITE_ROW;
}

}  // namespace

Result<std::unique_ptr<SqliteDb>> SqliteDb::Open(const SqliteOptions& options) {
  const std::filesystem::path& path = options.path;
  if (path.has_parent_path()) {
    std::error_code error;
    std::filesystem::create_directories(path.parent_path(), error);
    if (error) {
      return Unavailable(
          fmt::format("cannot create the folder of {}: {}", path.string(), error.message()));
    }
  }
  sqlite3* raw = nullptr;
  const int opened = sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                                     options.vfs.empty() ? nullptr : options.vfs.c_str());
  // Owned from here on: sqlite3_open_v2 allocates a handle even when it fails.
  std::unique_ptr<SqliteDb> db(new SqliteDb(raw, options));
  if (opened != SQLITE_OK) {
    return Unavailable(fmt::format("cannot open {}: {}", path.string(),
                                   raw != nullptr ? sqlite3_errmsg(raw) : "out of memory"));
  }
  sqlite3_extended_result_codes(raw, 1);
  sqlite3_busy_timeout(raw, static_cast<int>(options.busy_timeout.count()));
  // Anything wrong this early is the file's fault (not a database, another
  // program's tables), not the caller's SQL.
  const auto unusable = [&](const Status& status) {
    return status.code() == StatusCode::kResourceExhausted ? status : Unavailable(status.message());
  };
  const std::string pragmas = fmt::format("PRAGMA journal_mode=WAL; PRAGMA synchronous={};",
                                          options.full_sync ? "FULL" : "NORMAL");
  if (const Status status = db->Exec(pragmas, "open it as a database"); !status.ok()) {
    return unusable(status);
  }
  if (!options.schema.empty()) {
    if (const Status status = db->Exec(options.schema, "create perch's tables"); !status.ok()) {
      return unusable(status);
    }
  }
  return db;
}

SqliteDb::~SqliteDb() {
  for (auto& [sql, cached] : statements_) {
    sqlite3_finalize(cached.statement);
  }
  sqlite3_close_v2(db_);
}

Status SqliteDb::Exec(std::string_view sql, std::string_view what) {
  PERCH_RETURN_IF_ERROR(failed_flush_);
  return Check(sqlite3_exec(db_, std::string(sql).c_str(), nullptr, nullptr, nullptr), what);
}

Status SqliteDb::SetFullSync(bool full) {
  return Exec(full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL",
              "choose when commits flush the disk");
}

Status SqliteDb::SyncWal() {
  PERCH_RETURN_IF_ERROR(failed_flush_);
  sqlite3_file* wal = nullptr;
  const int found = sqlite3_file_control(db_, "main", SQLITE_FCNTL_JOURNAL_POINTER, &wal);
  if (found != SQLITE_OK) {
    return Check(found, "find the write-ahead log");
  }
  if (wal == nullptr || wal->pMethods == nullptr) {
    return Status::Ok();  // no log open: nothing was written through it
  }
  // Through the file's own VFS, so that a fault-injecting one sees the flush.
  const int synced = wal->pMethods->xSync(wal, SQLITE_SYNC_NORMAL);
  const Status status = Check(synced, "flush the write-ahead log to disk", sqlite3_errstr(synced));
  if (!status.ok()) {
    StopAfterFailedFlush(status);
  }
  return status;
}

Status SqliteDb::Checkpoint() {
  PERCH_RETURN_IF_ERROR(failed_flush_);
  const int result =
      sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
  const Status status = Check(result, "checkpoint the write-ahead log");
  // Disk full (copying into the database file) leaves the log to grow until
  // the next attempt; an I/O error may have been the log's flush.
  if ((result & 0xff) == SQLITE_IOERR) {
    StopAfterFailedFlush(status);
  }
  return status;
}

void SqliteDb::StopAfterFailedFlush(const Status& cause) {
  sqlite3_db_config(db_, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
  failed_flush_ = Unavailable(
      fmt::format("{}; what was written to {} since its last flush is in doubt, so this "
                  "connection is used no more: check the disk (dmesg); opening the file again "
                  "recovers it up to what the disk holds (the agent's queues do that themselves, "
                  "the hub needs to restart perch)",
                  cause.message(), path_.string()));
}

Status SqliteDb::Check(int result, std::string_view what) const {
  return Check(result, what, sqlite3_errmsg(db_));
}

Status SqliteDb::Check(int result, std::string_view what, const char* detail) const {
  if (Succeeded(result)) {
    return Status::Ok();
  }
  const std::string file = path_.string();
  switch (result & 0xff) {
    case SQLITE_FULL:
      return ResourceExhausted(fmt::format("cannot {}: the disk holding {} is full", what, file));
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return Unavailable(fmt::format(
          "cannot {}: {} is still locked by another connection after {} ms; retry later", what,
          file, busy_timeout_.count()));
    case SQLITE_CANTOPEN:
    case SQLITE_IOERR:
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
    case SQLITE_NOLFS:
    case SQLITE_PROTOCOL:
      return Unavailable(fmt::format("cannot {}: {} cannot be used: {}", what, file, detail));
    case SQLITE_CONSTRAINT:
      if (result == SQLITE_CONSTRAINT_UNIQUE || result == SQLITE_CONSTRAINT_PRIMARYKEY) {
        return Status(StatusCode::kAlreadyExists,
                      fmt::format("cannot {} in {}: {}", what, file, detail));
      }
      break;
    default:
      break;
  }
  return Internal(fmt::format("cannot {} in {}: {}", what, file, detail));
}

Result<SqliteStatement> SqliteDb::Prepare(std::string_view sql) {
  PERCH_RETURN_IF_ERROR(failed_flush_);
  const auto prepare = [&](unsigned flags) -> Result<sqlite3_stmt*> {
    sqlite3_stmt* statement = nullptr;
    const int result = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()), flags,
                                          &statement, nullptr);
    if (result != SQLITE_OK) {
      sqlite3_finalize(statement);
      const Status status = Check(result, "prepare a statement");
      // A statement that does not fit the tables means the file holds
      // another program's tables of the same names.
      return status.code() == StatusCode::kInternal
                 ? Unavailable(fmt::format("{} is not the database perch expects: {}",
                                           path_.string(), status.message()))
                 : status;
    }
    return statement;
  };
  const auto found = statements_.find(sql);
  if (found == statements_.end()) {
    PERCH_ASSIGN_OR_RETURN(sqlite3_stmt* const statement, prepare(SQLITE_PREPARE_PERSISTENT));
    Cached& cached = statements_[std::string(sql)];
    cached = Cached{.statement = statement, .in_use = true};
    return SqliteStatement(*this, statement, &cached.in_use);
  }
  if (!found->second.in_use) {
    found->second.in_use = true;
    return SqliteStatement(*this, found->second.statement, &found->second.in_use);
  }
  PERCH_ASSIGN_OR_RETURN(sqlite3_stmt* const statement, prepare(0));
  return SqliteStatement(*this, statement, nullptr);
}

Result<SqliteTransaction> SqliteDb::Begin() {
  PERCH_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE", "begin a transaction"));
  return SqliteTransaction(*this);
}

int64_t SqliteDb::Changes() const { return sqlite3_changes(db_); }
int64_t SqliteDb::LastInsertRowId() const { return sqlite3_last_insert_rowid(db_); }

SqliteStatement::SqliteStatement(SqliteStatement&& other) noexcept
    : db_(other.db_),
      statement_(std::exchange(other.statement_, nullptr)),
      in_use_(std::exchange(other.in_use_, nullptr)),
      bind_error_(other.bind_error_),
      last_result_(other.last_result_) {}

SqliteStatement::~SqliteStatement() {
  if (statement_ == nullptr) {
    return;
  }
  if (in_use_ == nullptr) {
    sqlite3_finalize(statement_);
    return;
  }
  sqlite3_reset(statement_);
  sqlite3_clear_bindings(statement_);
  *in_use_ = false;
}

SqliteStatement& SqliteStatement::Bind(int index, std::string_view text) {
  // An empty view may have no data pointer, which SQLite would bind as NULL.
  const int result = sqlite3_bind_text(statement_, index, text.empty() ? "" : text.data(),
                                       static_cast<int>(text.size()), SQLITE_TRANSIENT);
  if (result != SQLITE_OK && bind_error_ == SQLITE_OK) {
    bind_error_ = result;
  }
  return *this;
}

SqliteStatement& SqliteStatement::BindBlob(int index, std::string_view bytes) {
  const int result = sqlite3_bind_blob(statement_, index, bytes.empty() ? "" : bytes.data(),
                                       static_cast<int>(bytes.size()), SQLITE_TRANSIENT);
  if (result != SQLITE_OK && bind_error_ == SQLITE_OK) {
    bind_error_ = result;
  }
  return *this;
}

SqliteStatement& SqliteStatement::Bind(int index, int64_t value) {
  const int result = sqlite3_bind_int64(statement_, index, value);
  if (result != SQLITE_OK && bind_error_ == SQLITE_OK) {
    bind_error_ = result;
  }
  return *this;
}

SqliteStatement& SqliteStatement::BindNull(int index) {
  const int result = sqlite3_bind_null(statement_, index);
  if (result != SQLITE_OK && bind_error_ == SQLITE_OK) {
    bind_error_ = result;
  }
  return *this;
}

bool SqliteStatement::Step() {
  last_result_ = bind_error_ != SQLITE_OK ? bind_error_ : sqlite3_step(statement_);
  return last_result_ == SQLITE_ROW;
}

std::string SqliteStatement::Text(int column) const {
  const auto* data = static_cast<const char*>(sqlite3_column_blob(statement_, column));
  return data != nullptr
             ? std::string(data, static_cast<size_t>(sqlite3_column_bytes(statement_, column)))
             : std::string();
}

int64_t SqliteStatement::Int(int column) const { return sqlite3_column_int64(statement_, column); }

bool SqliteStatement::IsNull(int column) const {
  return sqlite3_column_type(statement_, column) == SQLITE_NULL;
}

Status SqliteStatement::Finish(std::string_view what) {
  // Read before the reset; a bind error's message was the connection's only
  // until the next bind, so it is described by its code.
  const Status status = bind_error_ != SQLITE_OK
                            ? db_->Check(bind_error_, what, sqlite3_errstr(bind_error_))
                            : db_->Check(last_result_, what);
  sqlite3_reset(statement_);
  sqlite3_clear_bindings(statement_);
  bind_error_ = SQLITE_OK;
  last_result_ = SQLITE_DONE;
  return status;
}

Status SqliteStatement::Run(std::string_view what) {
  while (Step()) {
  }
  return Finish(what);
}

SqliteTransaction::~SqliteTransaction() {
  if (db_ != nullptr) {
    // A failed statement may have rolled the transaction back already.
    (void)db_->Exec("ROLLBACK", "roll back a transaction");
  }
}

Status SqliteTransaction::Commit() {
  SqliteDb* db = std::exchange(db_, nullptr);
  const Status committed = db->Exec("COMMIT", "commit a transaction");
  if (!committed.ok()) {
    (void)db->Exec("ROLLBACK", "roll back a transaction");
  }
  return committed;
}

}  // namespace perch
