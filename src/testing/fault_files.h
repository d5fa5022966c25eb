// FaultFileIo: the FileIo (core/files.h) tests pass to perch's own durable
// file writes (current.json, device.json, ...) to see what a power loss or a
// failing disk does to them:
//   - the power can go at a chosen flush point (the Nth Sync or
//     SyncDirectory): that call and every later one fails with EIO;
//   - PowerLoss then forgets what was not durable: the content of files
//     written but not synced, and renames whose folder was not synced;
//   - writes can fail with ENOSPC or EIO, syncs with EIO.
// Never linked into perch itself.
//
// Threading: thread-safe (one mutex).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "core/files.h"

namespace perch::testing {

class FaultFileIo final : public FileIo {
 public:
  ssize_t Write(int fd, const std::filesystem::path& path, const void* data, size_t size) override;
  int Sync(int fd, const std::filesystem::path& path) override;
  int Rename(const std::filesystem::path& from, const std::filesystem::path& to) override;
  int SyncDirectory(const std::filesystem::path& folder) override;

  // Flush points (Sync and SyncDirectory calls) so far.
  int64_t flushes() const;
  // The power goes at flush point `flush` (0: never).
  void CutPowerAt(int64_t flush);
  // Undoes what was not durable, turns the power back on, clears faults.
  void PowerLoss();
  // 0: writes succeed; otherwise the errno they fail with (ENOSPC, EIO).
  void FailWrites(int error);
  // 0: syncs succeed; otherwise the errno they fail with (EIO).
  void FailSyncs(int error);

 private:
  struct PendingRename {
    std::filesystem::path from;
    std::filesystem::path to;
    std::optional<std::string> replaced;  // what `to` held before
  };

  mutable std::mutex mutex_;
  int64_t flushes_ = 0;
  int64_t cut_at_ = 0;
  bool powered_ = true;
  int fail_writes_ = 0;
  int fail_syncs_ = 0;
  std::map<std::filesystem::path, bool> unsynced_;  // files written since their last sync
  std::vector<PendingRename> renames_;              // not yet made durable
};

}  // namespace perch::testing
