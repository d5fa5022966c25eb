#include "store/blob_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <fstream>
#include <mutex>
#include <new>
#include <random>
#include <system_error>
#include <thread>
#include <utility>

namespace perch {
namespace {

namespace fs = std::filesystem;

std::string ErrnoText() { return std::strerror(errno); }

// Appends are gathered into chunks of this size, each written with one
// call and then hashed.
constexpr size_t kChunkBytes = size_t{1} << 20;
// Chunks written and waiting to be hashed, or being hashed, at most: the
// receiving thread waits for the hashing thread beyond this.
constexpr size_t kMaxChunks = 4;

constexpr std::align_val_t kChunkAlignment{4096};

bool IsValidWriterName(std::string_view name) {
  if (name.empty() || name.size() > 100) {
    return false;
  }
  return name.find_first_not_of(
             "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") ==
         std::string_view::npos;
}

std::string RandomName() {
  std::random_device device;
  std::array<char, 33> name{};
  constexpr char kHex[] = "0123456789abcdef";
  for (size_t i = 0; i + 1 < name.size(); ++i) {
    name[i] = kHex[device() & 0xf];
  }
  return std::string(name.data(), name.size() - 1);
}

Status SyncDirectory(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return Internal("cannot open " + dir.string() + ": " + ErrnoText());
  }
  const int synced = ::fsync(fd);
  ::close(fd);
  if (synced != 0) {
    return Internal("cannot sync " + dir.string() + ": " + ErrnoText());
  }
  return Status::Ok();
}

}  // namespace

// Hashes a writer's chunks in order on a thread of its own while the
// writer's thread receives and writes the next ones, and hands each chunk
// back for reuse once hashed.
//
// Threading: Take, Submit and the destructor are called from the writer's
// thread; the hashing thread owns the Sha256 from construction until the
// destructor returns (which hashes every submitted chunk first).
class BlobWriter::ChunkHasher {
 public:
  // nullptr when no thread can be started: the writer then hashes inline.
  static std::unique_ptr<ChunkHasher> Start(Sha256& hasher) {
    auto started = std::unique_ptr<ChunkHasher>(new ChunkHasher(hasher));
    try {
      started->thread_ = std::thread([hashing = started.get()] { hashing->Run(); });
    } catch (const std::system_error&) {
      return nullptr;
    }
    return started;
  }

  ~ChunkHasher() {
    {
      const std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    changed_.notify_all();
    if (thread_.joinable()) {
      thread_.join();
    }
  }
  ChunkHasher(const ChunkHasher&) = delete;
  ChunkHasher& operator=(const ChunkHasher&) = delete;

  // An empty chunk; waits while kMaxChunks are queued or being hashed.
  Chunk Take() {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [this] { return !free_.empty() || allocated_ < kMaxChunks; });
    if (free_.empty()) {
      ++allocated_;
      lock.unlock();
      return NewChunk();
    }
    Chunk chunk = std::move(free_.back());
    free_.pop_back();
    return chunk;
  }

  // Queues the first `size` bytes of `chunk` (from Take, or the writer's
  // first chunk) for hashing after those queued before.
  void Submit(Chunk chunk, size_t size) {
    {
      const std::lock_guard lock(mutex_);
      queued_.emplace_back(std::move(chunk), size);
    }
    changed_.notify_all();
  }

 private:
  // The writer's first chunk counts as allocated here.
  explicit ChunkHasher(Sha256& hasher) : hasher_(hasher) {}

  void Run() {
    std::unique_lock lock(mutex_);
    while (true) {
      changed_.wait(lock, [this] { return stopping_ || !queued_.empty(); });
      if (queued_.empty()) {
        return;  // stopping, and everything submitted is hashed
      }
      auto [chunk, size] = std::move(queued_.front());
      queued_.pop_front();
      lock.unlock();
      hasher_.Update(std::string_view(chunk.get(), size));
      lock.lock();
      free_.push_back(std::move(chunk));
      changed_.notify_all();
    }
  }

  Sha256& hasher_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<std::pair<Chunk, size_t>> queued_;
  std::vector<Chunk> free_;
  size_t allocated_ = 1;
  bool stopping_ = false;
  std::thread thread_;
};

void BlobWriter::ChunkDelete::operator()(char* chunk) const {
  ::operator delete[](chunk, kChunkAlignment);
}

BlobWriter::Chunk BlobWriter::NewChunk() {
  return Chunk(static_cast<char*>(::operator new[](kChunkBytes, kChunkAlignment)));
}

BlobWriter::BlobWriter(fs::path path, fs::path store_root, std::string name, int fd, uint64_t size,
                       std::unique_ptr<Sha256> hasher)
    : path_(std::move(path)),
      store_root_(std::move(store_root)),
      name_(std::move(name)),
      fd_(fd),
      size_(size),
      written_(size),
      hasher_(std::move(hasher)) {}

BlobWriter::~BlobWriter() {
  background_.reset();
  if (fd_ >= 0) {
    ::close(fd_);
  }
  if (!done_) {
    std::error_code ignored;
    fs::remove(path_, ignored);
  }
}

Status BlobWriter::Append(std::string_view bytes) {
  if (done_) {
    return Internal("blob " + name_ + " was already committed");
  }
  PERCH_RETURN_IF_ERROR(failed_);
  while (!bytes.empty()) {
    if (chunk_ == nullptr) {
      chunk_ = background_ != nullptr ? background_->Take() : NewChunk();
    }
    const size_t taken = std::min(bytes.size(), kChunkBytes - filled_);
    std::memcpy(chunk_.get() + filled_, bytes.data(), taken);
    filled_ += taken;
    size_ += taken;
    bytes.remove_prefix(taken);
    if (filled_ == kChunkBytes) {
      PERCH_RETURN_IF_ERROR(Flush(/*last=*/false));
    }
  }
  return Status::Ok();
}

Status BlobWriter::Flush(bool last) {
  PERCH_RETURN_IF_ERROR(failed_);
  if (filled_ == 0) {
    return Status::Ok();
  }
  std::string_view bytes(chunk_.get(), filled_);
  while (!bytes.empty()) {
    const ssize_t written = ::write(fd_, bytes.data(), bytes.size());
    if (written < 0) {
      if (errno == EINTR) {
        continue;
      }
      const std::string message = "cannot write " + path_.string() + ": " + ErrnoText();
      // The file now ends somewhere in this chunk; a resume re-hashes
      // whatever is there, so nothing wrong is kept.
      failed_ = errno == ENOSPC ? ResourceExhausted(message) : Internal(message);
      return failed_;
    }
    bytes.remove_prefix(static_cast<size_t>(written));
  }
  // Starts writing the chunk back now, so the disk works while the network
  // does and the fsync at Commit has little left to wait for.
  ::sync_file_range(fd_, static_cast<off_t>(written_), static_cast<off_t>(filled_),
                    SYNC_FILE_RANGE_WRITE);
  written_ += filled_;
  if (background_ == nullptr && !last) {
    background_ = ChunkHasher::Start(*hasher_);
  }
  if (background_ != nullptr) {
    background_->Submit(std::move(chunk_), filled_);
  } else {
    hasher_->Update(std::string_view(chunk_.get(), filled_));
  }
  filled_ = 0;
  return Status::Ok();
}

Result<Digest> BlobWriter::Commit(const std::optional<Digest>& expected,
                                  std::optional<uint64_t> expected_size) {
  if (done_) {
    return Internal("blob " + name_ + " was already committed");
  }
  done_ = true;  // from here on, any failure leaves nothing behind
  std::error_code ignored;
  if (const Status flushed = Flush(/*last=*/true); !flushed.ok()) {
    fs::remove(path_, ignored);
    return flushed;
  }
  background_.reset();  // hashes what is queued; the hasher is this thread's again
  const Digest actual = hasher_->Finish();
  if (expected_size && *expected_size != size_) {
    fs::remove(path_, ignored);
    return InvalidArgument("size mismatch: expected " + std::to_string(*expected_size) +
                           " bytes, got " + std::to_string(size_));
  }
  if (expected && *expected != actual) {
    fs::remove(path_, ignored);
    return InvalidArgument("digest mismatch: expected " + expected->str() + ", got " +
                           actual.str());
  }
  // Committed blobs are immutable; read-only says so to whoever links them.
  if (::fchmod(fd_, 0444) != 0 || ::fsync(fd_) != 0) {
    fs::remove(path_, ignored);
    return Internal("cannot sync " + path_.string() + ": " + ErrnoText());
  }
  ::close(fd_);
  fd_ = -1;
  const fs::path dir = store_root_ / "sha256" / std::string(actual.hex().substr(0, 2));
  std::error_code error;
  const bool created = fs::create_directories(dir, error);
  if (error) {
    fs::remove(path_, ignored);
    return Internal("cannot create " + dir.string() + ": " + error.message());
  }
  // A new fan-out folder's own entry must be durable too, or a power loss
  // takes the blob with it after it was reported verified.
  if (created) {
    if (const Status synced = SyncDirectory(dir.parent_path()); !synced.ok()) {
      fs::remove(path_, ignored);
      return synced;
    }
  }
  const fs::path target = dir / std::string(actual.hex());
  fs::rename(path_, target, error);
  if (error) {
    fs::remove(path_, ignored);
    return Internal("cannot move blob into " + target.string() + ": " + error.message());
  }
  PERCH_RETURN_IF_ERROR(SyncDirectory(dir));
  return actual;
}

void BlobWriter::Keep() {
  done_ = true;
  if (fd_ >= 0) {
    // A failed write leaves a shorter partial file; a resume re-hashes
    // whatever is there, so nothing wrong is kept.
    (void)Flush(/*last=*/true);
    ::fsync(fd_);
  }
}

Result<std::unique_ptr<BlobStore>> BlobStore::Open(const fs::path& root) {
  std::error_code error;
  fs::create_directories(root / "sha256", error);
  if (!error) {
    fs::create_directories(root / "writing", error);
  }
  if (error) {
    return Internal("cannot create the blob store in " + root.string() + ": " + error.message());
  }
  return std::unique_ptr<BlobStore>(new BlobStore(root));
}

fs::path BlobStore::PathOf(const Digest& digest) const {
  return root_ / "sha256" / std::string(digest.hex().substr(0, 2)) / std::string(digest.hex());
}

bool BlobStore::Has(const Digest& digest) const {
  std::error_code error;
  return fs::is_regular_file(PathOf(digest), error);
}

Result<uint64_t> BlobStore::Size(const Digest& digest) const {
  std::error_code error;
  const uintmax_t size = fs::file_size(PathOf(digest), error);
  if (error) {
    return NotFound("blob " + digest.str() + " is not in the store");
  }
  return static_cast<uint64_t>(size);
}

Result<std::string> BlobStore::Read(const Digest& digest, uint64_t max_bytes) const {
  PERCH_ASSIGN_OR_RETURN(const uint64_t size, Size(digest));
  if (size > max_bytes) {
    return InvalidArgument("blob " + digest.str() + " is " + std::to_string(size) +
                           " bytes, more than the " + std::to_string(max_bytes) + " allowed");
  }
  std::ifstream in(PathOf(digest), std::ios::binary);
  std::string bytes(size, '\0');
  if (!in.read(bytes.data(), static_cast<std::streamsize>(size))) {
    return Internal("cannot read blob " + digest.str() + ": " + ErrnoText());
  }
  return bytes;
}

Result<std::unique_ptr<BlobWriter>> BlobStore::OpenWriter(const std::string& name, bool resume) {
  const std::string writer_name = name.empty() ? RandomName() : name;
  if (!IsValidWriterName(writer_name)) {
    return InvalidArgument("blob writer name '" + writer_name.substr(0, 100) +
                           "' must be 1 to 100 of [A-Za-z0-9_-]");
  }
  const fs::path path = root_ / "writing" / writer_name;
  const int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (resume ? O_APPEND : O_TRUNC);
  const int fd = ::open(path.c_str(), flags, 0644);
  if (fd < 0) {
    return Internal("cannot open " + path.string() + ": " + ErrnoText());
  }
  auto hasher = std::make_unique<Sha256>();
  uint64_t size = 0;
  if (resume) {
    std::ifstream in(path, std::ios::binary);
    std::string buffer(1 << 20, '\0');
    while (in) {
      in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
      const auto got = static_cast<size_t>(in.gcount());
      hasher->Update(std::string_view(buffer.data(), got));
      size += got;
    }
  }
  return std::unique_ptr<BlobWriter>(
      new BlobWriter(path, root_, writer_name, fd, size, std::move(hasher)));
}

uint64_t BlobStore::WrittenSize(const std::string& name) const {
  if (!IsValidWriterName(name)) {
    return 0;
  }
  std::error_code error;
  const uintmax_t size = fs::file_size(root_ / "writing" / name, error);
  return error ? 0 : static_cast<uint64_t>(size);
}

Result<Digest> BlobStore::Put(std::string_view bytes) {
  const Digest digest = Sha256Of(bytes);
  if (Has(digest)) {
    return digest;
  }
  PERCH_ASSIGN_OR_RETURN(auto writer, OpenWriter("", false));
  PERCH_RETURN_IF_ERROR(writer->Append(bytes));
  return writer->Commit(digest);
}

Status BlobStore::Remove(const Digest& digest) {
  std::error_code error;
  fs::remove(PathOf(digest), error);
  if (error) {
    return Internal("cannot remove blob " + digest.str() + ": " + error.message());
  }
  return Status::Ok();
}

Result<std::vector<BlobInfo>> BlobStore::List() const {
  std::vector<BlobInfo> blobs;
  std::error_code error;
  for (fs::recursive_directory_iterator it(root_ / "sha256", error), end; !error && it != end;
       it.increment(error)) {
    if (!it->is_regular_file()) {
      continue;
    }
    auto digest = Digest::Parse("sha256:" + it->path().filename().string());
    if (!digest.ok()) {
      continue;  // not ours: left alone
    }
    blobs.push_back(
        BlobInfo{*digest, static_cast<uint64_t>(it->file_size()), it->last_write_time()});
  }
  if (error) {
    return Internal("cannot list the blob store: " + error.message());
  }
  return blobs;
}

void BlobStore::RemoveStaleWrites(std::chrono::seconds older_than) {
  const auto cutoff = fs::file_time_type::clock::now() - older_than;
  std::error_code error;
  for (fs::directory_iterator it(root_ / "writing", error), end; !error && it != end;
       it.increment(error)) {
    std::error_code ignored;
    if (it->last_write_time(ignored) < cutoff) {
      fs::remove(it->path(), ignored);
    }
  }
}

std::vector<std::string> BlobStore::StaleWrites(std::chrono::seconds older_than) const {
  const auto cutoff = fs::file_time_type::clock::now() - older_than;
  std::vector<std::string> names;
  std::error_code error;
  for (fs::directory_iterator it(root_ / "writing", error), end; !error && it != end;
       it.increment(error)) {
    std::error_code ignored;
    if (it->last_write_time(ignored) < cutoff) {
      names.push_back(it->path().filename().string());
    }
  }
  return names;
}

bool BlobStore::HasWrite(const std::string& name) const {
  std::error_code error;
  return IsValidWriterName(name) && fs::is_regular_file(root_ / "writing" / name, error);
}

Status BlobStore::RemoveWrite(const std::string& name) {
  if (!IsValidWriterName(name)) {
    return InvalidArgument("blob writer name '" + name.substr(0, 100) +
                           "' must be 1 to 100 of [A-Za-z0-9_-]");
  }
  std::error_code error;
  fs::remove(root_ / "writing" / name, error);
  if (error) {
    return Internal("cannot remove partial blob " + name + ": " + error.message());
  }
  return Status::Ok();
}

Status BlobStore::Touch(const Digest& digest) {
  std::error_code error;
  fs::last_write_time(PathOf(digest), fs::file_time_type::clock::now(), error);
  if (error) {
    return NotFound("blob " + digest.str() + " is not in the store");
  }
  return Status::Ok();
}

}  // namespace perch
