// FaultVfs: an SQLite VFS over the default one that tests open a database
// through (SqliteOptions::vfs) to see what a power loss or a failing disk
// does to it:
//   - every write not yet synced can be forgotten: SnapshotDurable copies the
//     files as the disk would hold them if the power went now, and PowerLoss
//     reverts the files themselves to that;
//   - the power can go at a chosen flush point (the Nth xSync): that sync and
//     every later write, sync, truncate and delete fails with SQLITE_IOERR,
//     as for a process on a machine that is going dark;
//   - writes can fail with ENOSPC (SQLITE_FULL) or EIO, and syncs with EIO,
//     in which case the file's unsynced writes are lost, as the kernel drops
//     the pages it could not write back.
// Syncs do not reach the real disk (the simulation decides what is durable),
// which keeps a replay over thousands of flush points fast.
//
// The VFS is registered with SQLite under its name for the life of the
// object (SQLite's VFS list is process-wide; the name keeps tests apart).
// Never linked into perch itself.
//
// Threading: thread-safe (one mutex); the flush observer runs on the thread
// that syncs, outside the lock, and may call SnapshotDurable.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include "core/status.h"

namespace perch::testing {

class FaultVfs {
 public:
  // Registers a VFS named `name` over SQLite's default one.
  static std::unique_ptr<FaultVfs> Register(const std::string& name);
  ~FaultVfs();
  FaultVfs(const FaultVfs&) = delete;
  FaultVfs& operator=(const FaultVfs&) = delete;

  const std::string& name() const;

  // Flush points (xSync calls) so far.
  int64_t flushes() const;
  // Called before each flush point takes effect, with its number (from 1):
  // the state the observer sees is what a power loss at that point leaves.
  void ObserveFlushes(std::function<void(int64_t)> observer);
  // The power goes at flush point `flush` (0: never): see above.
  void CutPowerAt(int64_t flush);
  bool powered() const;
  // Reverts every file to its last synced content, then turns the power
  // back on and clears every fault. The databases must be closed; what the
  // files hold then counts as durable.
  void PowerLoss();
  // Copies every file opened through this VFS and still present into
  // `folder` (same file names), as the disk would hold it after a power loss
  // now.
  Status SnapshotDurable(const std::filesystem::path& folder) const;

  // 0: writes succeed; otherwise the SQLite code they fail with
  // (SQLITE_FULL for ENOSPC, SQLITE_IOERR_WRITE for EIO).
  void FailWrites(int code);
  // Syncs fail with SQLITE_IOERR_FSYNC, losing the file's unsynced writes.
  void FailSyncs(bool fail);

  struct State;

 private:
  explicit FaultVfs(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace perch::testing
