#include "core/files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

namespace perch {
namespace {

Status ErrnoStatus(int error, const std::string& what, const std::filesystem::path& path) {
  const std::string message = "cannot " + what + " " + path.string() + ": " + std::strerror(error);
  return error == ENOSPC ? ResourceExhausted(message + " (free some space and retry)")
                         : Internal(message);
}

class SystemIo final : public FileIo {
 public:
  ssize_t Write(int fd, const std::filesystem::path& /*path*/, const void* data,
                size_t size) override {
    return ::write(fd, data, size);
  }
  int Sync(int fd, const std::filesystem::path& /*path*/) override { return ::fsync(fd); }
  int Rename(const std::filesystem::path& from, const std::filesystem::path& to) override {
    return ::rename(from.c_str(), to.c_str());
  }
  int SyncDirectory(const std::filesystem::path& folder) override {
    const int fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
      return -1;
    }
    const int synced = ::fsync(fd);
    const int error = errno;
    ::close(fd);
    errno = error;
    return synced;
  }
};

}  // namespace

FileIo& SystemFileIo() {
  // Stateless: one shared instance is no mutable global.
  static SystemIo io;
  return io;
}

Status WriteFileAtomically(const std::filesystem::path& path, std::string_view bytes, unsigned mode,
                           FileIo& io) {
  // Hidden beside the target; never through a link someone placed there.
  const std::filesystem::path temporary =
      path.parent_path() / ("." + path.filename().string() + ".tmp");
  ::unlink(temporary.c_str());
  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                        static_cast<mode_t>(mode));
  if (fd < 0) {
    return ErrnoStatus(errno, "create", temporary);
  }
  const auto fail = [&](const std::string& what, const std::filesystem::path& named) {
    const int error = errno;
    ::close(fd);
    ::unlink(temporary.c_str());
    return ErrnoStatus(error, what, named);
  };
  while (!bytes.empty()) {
    const ssize_t written = io.Write(fd, temporary, bytes.data(), bytes.size());
    if (written < 0 && errno == EINTR) {
      continue;
    }
    if (written < 0) {
      return fail("write", temporary);
    }
    bytes.remove_prefix(static_cast<size_t>(written));
  }
  if (io.Sync(fd, temporary) != 0) {
    return fail("sync", temporary);
  }
  ::close(fd);
  if (io.Rename(temporary, path) != 0) {
    const int error = errno;
    ::unlink(temporary.c_str());
    return ErrnoStatus(error, "replace", path);
  }
  // Until the folder is synced the rename itself may be lost on power loss.
  return SyncDirectory(path.has_parent_path() ? path.parent_path() : ".", io);
}

Status SyncDirectory(const std::filesystem::path& folder, FileIo& io) {
  if (io.SyncDirectory(folder) != 0) {
    return ErrnoStatus(errno, "sync the folder", folder);
  }
  return Status::Ok();
}

Status SyncTree(const std::filesystem::path& root, FileIo& io) {
  std::vector<std::filesystem::path> folders{root};
  std::error_code error;
  for (auto it = std::filesystem::recursive_directory_iterator(root, error);
       !error && it != std::filesystem::recursive_directory_iterator(); it.increment(error)) {
    if (it->is_directory(error) && !it->is_symlink(error)) {
      folders.push_back(it->path());
    }
  }
  if (error) {
    return Internal("cannot list " + root.string() + ": " + error.message());
  }
  // Children before parents: a parent's entry for a child folder is only
  // useful once the child's own entries are durable.
  for (auto it = folders.rbegin(); it != folders.rend(); ++it) {
    PERCH_RETURN_IF_ERROR(SyncDirectory(*it, io));
  }
  return Status::Ok();
}

Result<std::string> ReadFile(const std::filesystem::path& path) {
  // One buffer sized from fstat, filled by read(2): a stream copy through an
  // ostringstream cost three copies of every byte (batch inputs are MBs each).
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return NotFound("cannot open " + path.string() + ": " + std::strerror(errno));
  }
  struct stat info {};
  std::string content;
  if (::fstat(fd, &info) == 0 && S_ISREG(info.st_mode)) {
    content.resize(static_cast<size_t>(info.st_size));
  }
  size_t filled = 0;
  for (;;) {
    if (filled == content.size()) {
      // The file grew, or its size is not known (a pipe, /proc): read on.
      content.resize(std::max<size_t>(content.size() * 2, 64 * 1024));
    }
    const ssize_t got = ::read(fd, content.data() + filled, content.size() - filled);
    if (got < 0 && errno == EINTR) {
      continue;
    }
    if (got < 0) {
      const int error = errno;
      ::close(fd);
      return ErrnoStatus(error, "read", path);
    }
    if (got == 0) {
      break;
    }
    filled += static_cast<size_t>(got);
  }
  ::close(fd);
  content.resize(filled);
  return content;
}

}  // namespace perch
