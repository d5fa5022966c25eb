#include "core/files.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace perch {
namespace {

Status ErrnoStatus(const std::string& what, const std::filesystem::path& path) {
  const int error = errno;
  const std::string message = "cannot " + what + " " + path.string() + ": " + std::strerror(error);
  return error == ENOSPC ? ResourceExhausted(message) : Internal(message);
}

}  // namespace

Status WriteFileAtomically(const std::filesystem::path& path, std::string_view bytes,
                           unsigned mode) {
  // Hidden beside the target; never through a link someone placed there.
  const std::filesystem::path temporary =
      path.parent_path() / ("." + path.filename().string() + ".tmp");
  ::unlink(temporary.c_str());
  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                        static_cast<mode_t>(mode));
  if (fd < 0) {
    return ErrnoStatus("create", temporary);
  }
  while (!bytes.empty()) {
    const ssize_t written = ::write(fd, bytes.data(), bytes.size());
    if (written < 0 && errno == EINTR) {
      continue;
    }
    if (written < 0) {
      const Status status = ErrnoStatus("write", temporary);
      ::close(fd);
      ::unlink(temporary.c_str());
      return status;
    }
    bytes.remove_prefix(static_cast<size_t>(written));
  }
  if (::fsync(fd) != 0) {
    const Status status = ErrnoStatus("sync", temporary);
    ::close(fd);
    ::unlink(temporary.c_str());
    return status;
  }
  ::close(fd);
  if (::rename(temporary.c_str(), path.c_str()) != 0) {
    const Status status = ErrnoStatus("replace", path);
    ::unlink(temporary.c_str());
    return status;
  }
  const std::filesystem::path folder = path.has_parent_path() ? path.parent_path() : ".";
  const int dir = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
  return Status::Ok();
}

Result<std::string> ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return NotFound("cannot open " + path.string() + ": " + std::strerror(errno));
  }
  std::ostringstream content;
  content << in.rdbuf();
  if (in.bad()) {
    return Internal("cannot read " + path.string());
  }
  return content.str();
}

}  // namespace perch
