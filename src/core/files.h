// Small file operations that must not leave a half-written file behind, and
// the narrow set of system calls they make, so that tests can inject faults
// (power loss, EIO, ENOSPC) into perch's own durable writes.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <filesystem>
#include <string_view>

#include "core/status.h"

namespace perch {

// The system calls behind perch's durable file writes. Production code uses
// SystemFileIo(); tests pass one that fails or forgets writes
// (src/testing/fault_files.h). Each returns as its system call does: -1 with
// errno set on failure.
//
// Threading: SystemFileIo() is stateless and may be called from any thread;
// a test's implementation states its own.
class FileIo {
 public:
  virtual ~FileIo() = default;
  // write(2) on `fd`, open on `path` (named for the fault layer's bookkeeping).
  virtual ssize_t Write(int fd, const std::filesystem::path& path, const void* data,
                        size_t size) = 0;
  // fsync(2) of `fd`, open on `path`.
  virtual int Sync(int fd, const std::filesystem::path& path) = 0;
  // rename(2).
  virtual int Rename(const std::filesystem::path& from, const std::filesystem::path& to) = 0;
  // fsync(2) of the folder itself: makes the entries created, renamed or
  // removed in it durable.
  virtual int SyncDirectory(const std::filesystem::path& folder) = 0;
};

// The real system calls.
FileIo& SystemFileIo();

// Writes `bytes` to a temporary file beside `path`, fsyncs it, renames it
// over `path` and fsyncs the folder: a reader (or a restart after a crash or
// a power loss) sees the old content or the new, never a mix, and the new
// content is durable when this returns Ok. `mode` as for chmod.
// ResourceExhausted when the disk is full, Internal for any other failure
// (EIO), naming the file. A failed fsync is never retried: the page cache
// may have dropped the bytes it could not write, so a second fsync could
// succeed over lost data.
Status WriteFileAtomically(const std::filesystem::path& path, std::string_view bytes,
                           unsigned mode = 0644, FileIo& io = SystemFileIo());

// fsyncs `folder` itself (see FileIo::SyncDirectory). Internal naming it.
Status SyncDirectory(const std::filesystem::path& folder, FileIo& io = SystemFileIo());

// fsyncs every folder under `root` and `root` itself, deepest first: after
// files were linked or written (and synced) into a fresh tree, its entries
// are durable too, so the tree can be renamed into place.
Status SyncTree(const std::filesystem::path& root, FileIo& io = SystemFileIo());

// The whole file, or NotFound / Internal.
Result<std::string> ReadFile(const std::filesystem::path& path);

}  // namespace perch
