#include "testing/fault_vfs.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <mutex>
#include <string_view>
#include <utility>
#include <vector>

namespace perch::testing {
namespace fs = std::filesystem;

namespace {

// What a file held before each write since its last sync, newest last.
struct Undo {
  int64_t offset = 0;
  std::string bytes;
};

struct FileHistory {
  int64_t synced_size = 0;
  std::vector<Undo> undo;
};

int64_t RealSize(sqlite3_file* real) {
  sqlite3_int64 size = 0;
  return real->pMethods->xFileSize(real, &size) == SQLITE_OK ? size : 0;
}

std::string ReadRange(sqlite3_file* real, int64_t offset, int64_t size) {
  std::string bytes(static_cast<size_t>(size), '\0');
  // A short read fills with zeros, which is fine: those bytes did not exist.
  (void)real->pMethods->xRead(real, bytes.data(), static_cast<int>(size), offset);
  return bytes;
}

// Applies a history's undo to the file at `path` (closed or not).
bool Revert(const fs::path& path, const FileHistory& history) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    return false;
  }
  bool ok = true;
  for (auto it = history.undo.rbegin(); it != history.undo.rend(); ++it) {
    ok = ok && ::pwrite(fd, it->bytes.data(), it->bytes.size(), it->offset) ==
                   static_cast<ssize_t>(it->bytes.size());
  }
  ok = ok && ::ftruncate(fd, history.synced_size) == 0;
  ::close(fd);
  return ok;
}

}  // namespace

struct FaultVfs::State {
  std::string name;
  sqlite3_vfs vfs{};
  sqlite3_vfs* real = nullptr;

  mutable std::mutex mutex;
  std::map<std::string, FileHistory> files;  // by path
  int64_t flushes = 0;
  int64_t cut_at = 0;
  bool powered = true;
  int fail_writes = 0;
  bool fail_syncs = false;
  std::function<void(int64_t)> observer;
};

namespace {

struct File {
  sqlite3_file base;
  FaultVfs::State* state;
  std::string path;  // empty for SQLite's nameless temporary files
  sqlite3_file* real;
};

File& FileOf(sqlite3_file* file) { return *reinterpret_cast<File*>(file); }
sqlite3_file* Real(sqlite3_file* file) { return FileOf(file).real; }

int Close(sqlite3_file* file) {
  const int closed = Real(file)->pMethods->xClose(Real(file));
  FileOf(file).path.~basic_string();
  return closed;
}

int Read(sqlite3_file* file, void* data, int size, sqlite3_int64 offset) {
  return Real(file)->pMethods->xRead(Real(file), data, size, offset);
}

int Write(sqlite3_file* file, const void* data, int size, sqlite3_int64 offset) {
  File& self = FileOf(file);
  FaultVfs::State& state = *self.state;
  {
    std::lock_guard lock(state.mutex);
    if (!state.powered) {
      return SQLITE_IOERR_WRITE;
    }
    if (state.fail_writes != 0) {
      return state.fail_writes;
    }
    if (!self.path.empty()) {
      const int64_t size_now = RealSize(self.real);
      const int64_t end = std::min<int64_t>(offset + size, size_now);
      if (end > offset) {
        state.files[self.path].undo.push_back(
            Undo{.offset = offset, .bytes = ReadRange(self.real, offset, end - offset)});
      }
    }
  }
  return self.real->pMethods->xWrite(self.real, data, size, offset);
}

int Truncate(sqlite3_file* file, sqlite3_int64 size) {
  File& self = FileOf(file);
  FaultVfs::State& state = *self.state;
  {
    std::lock_guard lock(state.mutex);
    if (!state.powered) {
      return SQLITE_IOERR_TRUNCATE;
    }
    if (!self.path.empty()) {
      const int64_t size_now = RealSize(self.real);
      if (size_now > size) {
        state.files[self.path].undo.push_back(
            Undo{.offset = size, .bytes = ReadRange(self.real, size, size_now - size)});
      }
    }
  }
  return self.real->pMethods->xTruncate(self.real, size);
}

int Sync(sqlite3_file* file, int /*flags*/) {
  File& self = FileOf(file);
  FaultVfs::State& state = *self.state;
  std::function<void(int64_t)> observer;
  int64_t flush = 0;
  {
    std::lock_guard lock(state.mutex);
    if (!state.powered) {
      return SQLITE_IOERR_FSYNC;
    }
    flush = ++state.flushes;
    observer = state.observer;
  }
  if (observer) {
    observer(flush);
  }
  std::lock_guard lock(state.mutex);
  if (state.cut_at != 0 && flush >= state.cut_at) {
    state.powered = false;
    return SQLITE_IOERR_FSYNC;
  }
  if (self.path.empty()) {
    return SQLITE_OK;
  }
  FileHistory& history = state.files[self.path];
  if (state.fail_syncs) {
    // As the kernel does after a failed writeback: the bytes are gone, and
    // nothing says so again.
    (void)Revert(self.path, history);
    history.undo.clear();
    return SQLITE_IOERR_FSYNC;
  }
  history.undo.clear();
  history.synced_size = RealSize(self.real);
  return SQLITE_OK;
}

int FileSize(sqlite3_file* file, sqlite3_int64* size) {
  return Real(file)->pMethods->xFileSize(Real(file), size);
}
int Lock(sqlite3_file* file, int level) { return Real(file)->pMethods->xLock(Real(file), level); }
int Unlock(sqlite3_file* file, int level) {
  return Real(file)->pMethods->xUnlock(Real(file), level);
}
int CheckReservedLock(sqlite3_file* file, int* out) {
  return Real(file)->pMethods->xCheckReservedLock(Real(file), out);
}
int FileControl(sqlite3_file* file, int op, void* arg) {
  if (op == SQLITE_FCNTL_MMAP_SIZE) {
    // No memory-mapped I/O: every write goes through Write, where it is
    // recorded.
    *static_cast<sqlite3_int64*>(arg) = 0;
    return SQLITE_OK;
  }
  return Real(file)->pMethods->xFileControl(Real(file), op, arg);
}
int SectorSize(sqlite3_file* file) { return Real(file)->pMethods->xSectorSize(Real(file)); }
int DeviceCharacteristics(sqlite3_file* file) {
  return Real(file)->pMethods->xDeviceCharacteristics(Real(file));
}
int ShmMap(sqlite3_file* file, int region, int size, int extend, void volatile** out) {
  return Real(file)->pMethods->xShmMap(Real(file), region, size, extend, out);
}
int ShmLock(sqlite3_file* file, int offset, int n, int flags) {
  return Real(file)->pMethods->xShmLock(Real(file), offset, n, flags);
}
void ShmBarrier(sqlite3_file* file) { Real(file)->pMethods->xShmBarrier(Real(file)); }
int ShmUnmap(sqlite3_file* file, int remove) {
  return Real(file)->pMethods->xShmUnmap(Real(file), remove);
}
int Fetch(sqlite3_file* /*file*/, sqlite3_int64 /*offset*/, int /*size*/, void** out) {
  *out = nullptr;
  return SQLITE_OK;
}
int Unfetch(sqlite3_file* /*file*/, sqlite3_int64 /*offset*/, void* /*page*/) { return SQLITE_OK; }

const sqlite3_io_methods kMethods = {
    .iVersion = 3,
    .xClose = Close,
    .xRead = Read,
    .xWrite = Write,
    .xTruncate = Truncate,
    .xSync = Sync,
    .xFileSize = FileSize,
    .xLock = Lock,
    .xUnlock = Unlock,
    .xCheckReservedLock = CheckReservedLock,
    .xFileControl = FileControl,
    .xSectorSize = SectorSize,
    .xDeviceCharacteristics = DeviceCharacteristics,
    .xShmMap = ShmMap,
    .xShmLock = ShmLock,
    .xShmBarrier = ShmBarrier,
    .xShmUnmap = ShmUnmap,
    .xFetch = Fetch,
    .xUnfetch = Unfetch,
};

int Open(sqlite3_vfs* vfs, const char* name, sqlite3_file* file, int flags, int* out_flags) {
  auto* state = static_cast<FaultVfs::State*>(vfs->pAppData);
  auto* self = reinterpret_cast<File*>(file);
  // The real file lives right after ours, in the space szOsFile asked for.
  auto* real = reinterpret_cast<sqlite3_file*>(self + 1);
  self->base.pMethods = nullptr;
  const int opened = state->real->xOpen(state->real, name, real, flags, out_flags);
  if (opened != SQLITE_OK) {
    return opened;
  }
  self->state = state;
  self->real = real;
  new (&self->path) std::string(name != nullptr ? name : "");
  if (!self->path.empty()) {
    std::lock_guard lock(state->mutex);
    if (!state->files.contains(self->path)) {
      // What was there before we first saw it counts as durable.
      state->files[self->path].synced_size = RealSize(real);
    }
  }
  self->base.pMethods = &kMethods;
  return SQLITE_OK;
}

int Delete(sqlite3_vfs* vfs, const char* name, int sync_dir) {
  auto* state = static_cast<FaultVfs::State*>(vfs->pAppData);
  {
    std::lock_guard lock(state->mutex);
    if (!state->powered) {
      return SQLITE_IOERR_DELETE;
    }
    state->files.erase(name);
  }
  return state->real->xDelete(state->real, name, sync_dir);
}

}  // namespace

std::unique_ptr<FaultVfs> FaultVfs::Register(const std::string& name) {
  auto state = std::make_unique<State>();
  state->name = name;
  state->real = sqlite3_vfs_find(nullptr);
  // The default VFS's own functions, but ours to open and delete files.
  state->vfs = *state->real;
  state->vfs.iVersion = std::min(state->real->iVersion, 3);
  state->vfs.szOsFile = static_cast<int>(sizeof(File)) + state->real->szOsFile;
  state->vfs.pNext = nullptr;
  state->vfs.zName = state->name.c_str();
  state->vfs.pAppData = state.get();
  state->vfs.xOpen = Open;
  state->vfs.xDelete = Delete;
  sqlite3_vfs_register(&state->vfs, 0);
  return std::unique_ptr<FaultVfs>(new FaultVfs(std::move(state)));
}

FaultVfs::FaultVfs(std::unique_ptr<State> state) : state_(std::move(state)) {}

FaultVfs::~FaultVfs() { sqlite3_vfs_unregister(&state_->vfs); }

const std::string& FaultVfs::name() const { return state_->name; }

int64_t FaultVfs::flushes() const {
  std::lock_guard lock(state_->mutex);
  return state_->flushes;
}

void FaultVfs::ObserveFlushes(std::function<void(int64_t)> observer) {
  std::lock_guard lock(state_->mutex);
  state_->observer = std::move(observer);
}

void FaultVfs::CutPowerAt(int64_t flush) {
  std::lock_guard lock(state_->mutex);
  state_->cut_at = flush;
}

bool FaultVfs::powered() const {
  std::lock_guard lock(state_->mutex);
  return state_->powered;
}

void FaultVfs::PowerLoss() {
  std::lock_guard lock(state_->mutex);
  for (auto& [path, history] : state_->files) {
    (void)Revert(path, history);
  }
  // Back on, whatever the files hold is durable; they are seen afresh when
  // opened again (others may change them meanwhile).
  state_->files.clear();
  state_->powered = true;
  state_->cut_at = 0;
  state_->fail_writes = 0;
  state_->fail_syncs = false;
}

Status FaultVfs::SnapshotDurable(const fs::path& folder) const {
  std::lock_guard lock(state_->mutex);
  std::error_code error;
  fs::create_directories(folder, error);
  for (const auto& [path, history] : state_->files) {
    if (!fs::exists(path, error)) {
      continue;
    }
    const fs::path copy = folder / fs::path(path).filename();
    fs::copy_file(path, copy, fs::copy_options::overwrite_existing, error);
    if (error) {
      return Internal("cannot copy " + path + ": " + error.message());
    }
    if (!Revert(copy, history)) {
      return Internal("cannot revert " + copy.string());
    }
  }
  return Status::Ok();
}

void FaultVfs::FailWrites(int code) {
  std::lock_guard lock(state_->mutex);
  state_->fail_writes = code;
}

void FaultVfs::FailSyncs(bool fail) {
  std::lock_guard lock(state_->mutex);
  state_->fail_syncs = fail;
}

}  // namespace perch::testing
