// A content-addressed store of blobs on disk:
//   ROOT/sha256/<first 2 hex>/<64 hex>   committed blobs, immutable
//   ROOT/writing/<name>                  blobs being written
// Bytes are hashed as they are written; Commit fsyncs the file and renames it
// into place only if its digest (and size, when given) is what the caller
// expected, so a reader never sees a partial or corrupt blob. The hub's
// registry and the agent's pull cache both keep their blobs here.
//
// Threading: BlobStore is safe to use from any thread. A BlobWriter belongs
// to one thread at a time; two writers must not share a name. A writer of
// more than one chunk (1 MiB) hashes on a thread of its own, which it starts
// at its first full chunk and joins before Commit returns or it is destroyed.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "store/digest.h"

namespace perch {

// What a download into a BlobWriter asks its HTTP client to read at once
// (http::ClientRequest::receive_buffer_bytes): a quarter of the reads of
// libcurl's 16 KiB, while each read's bytes are still in the CPU's cache
// when they are copied into a chunk (512 KiB reads measured no faster).
inline constexpr size_t kBlobReceiveBufferBytes = size_t{64} << 10;

class BlobWriter {
 public:
  ~BlobWriter();  // removes the file unless committed or kept
  BlobWriter(const BlobWriter&) = delete;
  BlobWriter& operator=(const BlobWriter&) = delete;

  // Internal on a write error (disk full: ResourceExhausted); after one,
  // every call fails the same way. Bytes are gathered into 1 MiB chunks:
  // each is written with one call, its writeback started, and its hashing
  // handed to the writer's hashing thread, so SHA-256 of one chunk runs
  // while the next arrives (hashing costs about as much CPU as receiving
  // and writing).
  Status Append(std::string_view bytes);
  // Bytes appended so far, including those found when resuming.
  uint64_t size() const { return size_; }
  const std::string& name() const { return name_; }

  // Verifies digest and size, fsyncs, and moves the blob into the store.
  // InvalidArgument (naming expected and actual) on a mismatch, and the
  // partial file is removed: nothing unverified stays behind.
  Result<Digest> Commit(const std::optional<Digest>& expected,
                        std::optional<uint64_t> expected_size = std::nullopt);
  // Writes out what is gathered and leaves the partial file for a later
  // OpenWriter(name, resume = true).
  void Keep();

 private:
  class ChunkHasher;
  // A page-aligned chunk: the kernel copies it into the page cache with
  // source and target equally aligned (several times faster on this AMD
  // EPYC than from malloc's 16-byte offset).
  struct ChunkDelete {
    void operator()(char* chunk) const;
  };
  using Chunk = std::unique_ptr<char[], ChunkDelete>;
  static Chunk NewChunk();

  // Writes the gathered chunk and hashes it: on the hashing thread, started
  // here unless `last` (the end of the blob: nothing would overlap).
  Status Flush(bool last);

  friend class BlobStore;
  BlobWriter(std::filesystem::path path, std::filesystem::path store_root, std::string name, int fd,
             uint64_t size, std::unique_ptr<Sha256> hasher);

  std::filesystem::path path_;
  std::filesystem::path store_root_;
  std::string name_;
  int fd_;
  uint64_t size_;                   // appended, including what is not written yet
  uint64_t written_;                // in the file
  std::unique_ptr<Sha256> hasher_;  // the hashing thread's while it runs
  Chunk chunk_;                     // appended, not yet written
  size_t filled_ = 0;               // of chunk_
  std::unique_ptr<ChunkHasher> background_;
  Status failed_;  // the first write error; sticky
  bool done_ = false;
};

struct BlobInfo {
  Digest digest;
  uint64_t size;
  std::filesystem::file_time_type modified;
};

class BlobStore {
 public:
  // Creates ROOT and its folders if missing. Internal if it cannot.
  static Result<std::unique_ptr<BlobStore>> Open(const std::filesystem::path& root);

  bool Has(const Digest& digest) const;
  // NotFound when the blob is not in the store.
  Result<uint64_t> Size(const Digest& digest) const;
  std::filesystem::path PathOf(const Digest& digest) const;
  // Reads a whole blob of at most `max_bytes` (manifests, configs).
  // NotFound, or InvalidArgument when larger.
  Result<std::string> Read(const Digest& digest, uint64_t max_bytes) const;

  // Starts writing a blob under `name` ([A-Za-z0-9_-]{1,100}; empty: a
  // fresh random one). With `resume`, bytes already written under that name
  // are kept (and re-hashed) and Append continues after them.
  Result<std::unique_ptr<BlobWriter>> OpenWriter(const std::string& name, bool resume);
  // Bytes already written under `name` (0 if none).
  uint64_t WrittenSize(const std::string& name) const;
  // Hashes and stores small content in one step.
  Result<Digest> Put(std::string_view bytes);

  // Idempotent: removing a missing blob is not an error.
  Status Remove(const Digest& digest);
  // Every committed blob, for garbage collection.
  Result<std::vector<BlobInfo>> List() const;
  // Removes partial writes not touched for `older_than`.
  void RemoveStaleWrites(std::chrono::seconds older_than);
  // Names of the partial writes not touched for `older_than` (what
  // RemoveStaleWrites would remove), so that callers can report or forget them.
  std::vector<std::string> StaleWrites(std::chrono::seconds older_than) const;
  // Whether a partial write exists under `name` (even an empty one).
  bool HasWrite(const std::string& name) const;
  // Removes one partial write; idempotent. InvalidArgument for a bad name.
  Status RemoveWrite(const std::string& name);
  // Marks a committed blob as just used, so that garbage collection's grace
  // period protects a blob that a push in progress relies on. NotFound if absent.
  Status Touch(const Digest& digest);

 private:
  explicit BlobStore(std::filesystem::path root) : root_(std::move(root)) {}
  std::filesystem::path root_;
};

}  // namespace perch
