// Internal to pipeline/: the state a pipeline keeps per stream (windows and
// carried tensors), with an idle timeout and a cap on live streams; the
// least recently used stream goes first when the cap is reached.
//
// Threading: StreamTable is thread-safe. A StreamState is locked by the one
// request of its stream that runs; Get never holds the table lock while a
// stream is locked.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "core/metrics.h"
#include "core/thread_annotations.h"
#include "tensor/tensor.h"

namespace perch::pipeline {

struct StreamState {
  std::mutex mutex;
  std::map<std::string, Tensor> tensors;  // by step name; guarded by mutex
};

struct StreamLimits {
  size_t max_streams = 1000;
  std::chrono::milliseconds idle_timeout{std::chrono::minutes(10)};
};

struct StreamCounters {
  Gauge& live;
  Counter& dropped_idle;
  Counter& dropped_full;  // dropped as least recently used at the cap
};

class StreamTable {
 public:
  using Clock = std::function<std::chrono::steady_clock::time_point()>;
  StreamTable(StreamLimits limits, Clock now, StreamCounters counters)
      : limits_(limits), now_(std::move(now)), counters_(counters) {}

  // The state of stream `id`, made fresh when it is new or was dropped.
  // Streams idle past the timeout are dropped first, then the least recently
  // used if the table is full.
  std::shared_ptr<StreamState> Get(const std::string& id) EXCLUDES(mutex_);

  size_t size() const EXCLUDES(mutex_);

 private:
  struct Entry {
    std::shared_ptr<StreamState> state;
    std::list<std::string>::iterator recency;
    std::chrono::steady_clock::time_point last_used;
  };

  const StreamLimits limits_;
  const Clock now_;
  const StreamCounters counters_;

  mutable Mutex mutex_;
  std::map<std::string, Entry, std::less<>> streams_ GUARDED_BY(mutex_);
  std::list<std::string> recency_ GUARDED_BY(mutex_);  // most recently used first
};

}  // namespace perch::pipeline
