// For the fleet store's tests: a database as an older hub left it, to check
// that the store opens it and adds what the newer schema needs.
#pragma once

#include <filesystem>
#include <string>

#include "core/sqlite.h"
#include "core/status.h"

namespace perch {

// Replaces the database at `path` (and its WAL files) with one made by `sql`.
inline Status WriteOldDatabase(const std::filesystem::path& path, const std::string& sql) {
  for (const char* suffix : {"", "-wal", "-shm"}) {
    std::filesystem::remove(path.string() + suffix);
  }
  auto db = SqliteDb::Open({.path = path});
  if (!db.ok()) {
    return db.status();
  }
  return (*db)->Exec(sql, "an old database");
}

}  // namespace perch
