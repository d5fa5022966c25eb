#include "store/blob_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <random>

namespace perch {
namespace {

namespace fs = std::filesystem;

std::string ErrnoText() { return std::strerror(errno); }

// Gathered appends are written out in pieces of this size.
constexpr size_t kWriteBytes = size_t{1} << 20;

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

BlobWriter::BlobWriter(fs::path path, fs::path store_root, std::string name, int fd, uint64_t size,
                       std::unique_ptr<Sha256> hasher)
    : path_(std::move(path)),
      store_root_(std::move(store_root)),
      name_(std::move(name)),
      fd_(fd),
      size_(size),
      hasher_(std::move(hasher)) {}

BlobWriter::~BlobWriter() {
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
  hasher_->Update(bytes);
  size_ += bytes.size();
  pending_.append(bytes);
  return pending_.size() >= kWriteBytes ? Flush() : Status::Ok();
}

Status BlobWriter::Flush() {
  std::string_view bytes = pending_;
  while (!bytes.empty()) {
    const ssize_t written = ::write(fd_, bytes.data(), bytes.size());
    if (written < 0) {
      if (errno == EINTR) {
        continue;
      }
      const std::string message = "cannot write " + path_.string() + ": " + ErrnoText();
      return errno == ENOSPC ? ResourceExhausted(message) : Internal(message);
    }
    bytes.remove_prefix(static_cast<size_t>(written));
  }
  // Starts writing the new bytes back now, so the disk works while the
  // network does and the fsync at Commit has little left to wait for.
  ::sync_file_range(fd_, static_cast<off_t>(size_ - pending_.size()),
                    static_cast<off_t>(pending_.size()), SYNC_FILE_RANGE_WRITE);
  pending_.clear();
  return Status::Ok();
}

Result<Digest> BlobWriter::Commit(const std::optional<Digest>& expected,
                                  std::optional<uint64_t> expected_size) {
  if (done_) {
    return Internal("blob " + name_ + " was already committed");
  }
  done_ = true;  // from here on, any failure leaves nothing behind
  const Digest actual = hasher_->Finish();
  std::error_code ignored;
  if (const Status flushed = Flush(); !flushed.ok()) {
    fs::remove(path_, ignored);
    return flushed;
  }
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
    (void)Flush();
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
