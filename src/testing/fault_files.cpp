#include "testing/fault_files.h"

#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <iterator>

namespace perch::testing {
namespace fs = std::filesystem;

namespace {

std::optional<std::string> Content(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return std::nullopt;
  }
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace

ssize_t FaultFileIo::Write(int fd, const fs::path& path, const void* data, size_t size) {
  {
    std::lock_guard lock(mutex_);
    if (!powered_) {
      errno = EIO;
      return -1;
    }
    if (fail_writes_ != 0) {
      errno = fail_writes_;
      return -1;
    }
    unsynced_[path] = true;
  }
  return ::write(fd, data, size);
}

int FaultFileIo::Sync(int /*fd*/, const fs::path& path) {
  std::lock_guard lock(mutex_);
  ++flushes_;
  if (!powered_ || (cut_at_ != 0 && flushes_ >= cut_at_)) {
    powered_ = false;
    errno = EIO;
    return -1;
  }
  if (fail_syncs_ != 0) {
    errno = fail_syncs_;
    return -1;  // and the bytes stay unsynced: a power loss forgets them
  }
  unsynced_.erase(path);
  return 0;
}

int FaultFileIo::Rename(const fs::path& from, const fs::path& to) {
  std::lock_guard lock(mutex_);
  if (!powered_) {
    errno = EIO;
    return -1;
  }
  std::error_code error;
  PendingRename pending{.from = from,
                        .to = to,
                        .replaced = fs::is_regular_file(to, error) ? Content(to) : std::nullopt};
  if (::rename(from.c_str(), to.c_str()) != 0) {
    return -1;
  }
  if (const auto node = unsynced_.extract(from)) {
    unsynced_[to] = true;
  }
  renames_.push_back(std::move(pending));
  return 0;
}

int FaultFileIo::SyncDirectory(const fs::path& folder) {
  std::lock_guard lock(mutex_);
  ++flushes_;
  if (!powered_ || (cut_at_ != 0 && flushes_ >= cut_at_)) {
    powered_ = false;
    errno = EIO;
    return -1;
  }
  if (fail_syncs_ != 0) {
    errno = fail_syncs_;
    return -1;
  }
  std::erase_if(renames_, [&](const PendingRename& rename) {
    return fs::path(rename.to).parent_path() == folder;
  });
  return 0;
}

int64_t FaultFileIo::flushes() const {
  std::lock_guard lock(mutex_);
  return flushes_;
}

void FaultFileIo::CutPowerAt(int64_t flush) {
  std::lock_guard lock(mutex_);
  cut_at_ = flush;
}

void FaultFileIo::PowerLoss() {
  std::lock_guard lock(mutex_);
  // Content first (it was lost wherever the file now is), then the renames,
  // newest first.
  for (const auto& [path, unsynced] : unsynced_) {
    std::error_code ignored;
    fs::resize_file(path, 0, ignored);
  }
  for (auto it = renames_.rbegin(); it != renames_.rend(); ++it) {
    std::error_code ignored;
    fs::rename(it->to, it->from, ignored);
    if (it->replaced) {
      std::ofstream(it->to, std::ios::binary | std::ios::trunc) << *it->replaced;
    }
  }
  unsynced_.clear();
  renames_.clear();
  powered_ = true;
  cut_at_ = 0;
  fail_writes_ = 0;
  fail_syncs_ = 0;
}

void FaultFileIo::FailWrites(int error) {
  std::lock_guard lock(mutex_);
  fail_writes_ = error;
}

void FaultFileIo::FailSyncs(int error) {
  std::lock_guard lock(mutex_);
  fail_syncs_ = error;
}

}  // namespace perch::testing
