// Internal to http/: the BodyStream of a streamed request body. Not a
// public header.
//
// Threading: Next from the handler's thread; Deliver and Fail from the
// connection's strand; the rest from either.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string_view>

#include "core/status.h"
#include "http/message.h"

namespace perch::http {

// Hands a streamed request body from the connection's I/O strand to the
// handler thread, one piece per Next(): the handler thread asks, the strand
// reads, the handler thread waits for the piece.
class BodyBridge final : public BodyStream {
 public:
  BodyBridge(std::function<void()> read_piece, std::optional<uint64_t> declared)
      : read_piece_(std::move(read_piece)), declared_(declared) {}

  Result<std::string_view> Next() override {
    std::unique_lock lock(mutex_);
    if (!failure_.ok()) {
      return failure_;
    }
    if (done_) {
      return std::string_view();
    }
    waiting_ = true;
    lock.unlock();
    read_piece_();
    lock.lock();
    ready_.wait(lock, [this] { return !waiting_; });
    if (!failure_.ok()) {
      return failure_;
    }
    return std::string_view(piece_, piece_size_);
  }

  std::optional<uint64_t> declared_length() const override { return declared_; }

  // From the strand: the piece read (valid until the next read), or the end.
  void Deliver(const char* data, size_t size, bool done) {
    {
      const std::lock_guard lock(mutex_);
      piece_ = data;
      piece_size_ = size;
      done_ = done;
      waiting_ = false;
    }
    ready_.notify_all();
  }
  void Fail(Status status) {
    {
      const std::lock_guard lock(mutex_);
      if (failure_.ok()) {
        failure_ = std::move(status);
      }
      waiting_ = false;
    }
    ready_.notify_all();
  }
  bool complete() const {
    const std::lock_guard lock(mutex_);
    return done_ && failure_.ok();
  }
  bool too_large() const {
    const std::lock_guard lock(mutex_);
    return failure_.code() == StatusCode::kResourceExhausted;
  }

 private:
  const std::function<void()> read_piece_;
  const std::optional<uint64_t> declared_;
  mutable std::mutex mutex_;
  std::condition_variable ready_;
  const char* piece_ = nullptr;  // guarded by mutex_
  size_t piece_size_ = 0;        // guarded by mutex_
  bool done_ = false;            // guarded by mutex_
  bool waiting_ = false;         // guarded by mutex_
  Status failure_;               // guarded by mutex_
};

}  // namespace perch::http
