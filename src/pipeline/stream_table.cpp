#include "pipeline/stream_table.h"

namespace perch::pipeline {

std::shared_ptr<StreamState> StreamTable::Get(const std::string& id) {
  const auto now = now_();
  MutexLock lock(mutex_);
  // The least recently used are also the longest idle: drop from the back.
  while (!recency_.empty()) {
    const auto oldest = streams_.find(recency_.back());
    if (now - oldest->second.last_used < limits_.idle_timeout) {
      break;
    }
    streams_.erase(oldest);
    recency_.pop_back();
    counters_.dropped_idle.Increment();
  }
  auto found = streams_.find(id);
  if (found != streams_.end()) {
    recency_.splice(recency_.begin(), recency_, found->second.recency);
    found->second.last_used = now;
    counters_.live.Set(static_cast<int64_t>(streams_.size()));
    return found->second.state;
  }
  while (!recency_.empty() && streams_.size() >= limits_.max_streams) {
    streams_.erase(recency_.back());
    recency_.pop_back();
    counters_.dropped_full.Increment();
  }
  recency_.push_front(id);
  auto state = std::make_shared<StreamState>();
  streams_.emplace(id, Entry{.state = state, .recency = recency_.begin(), .last_used = now});
  counters_.live.Set(static_cast<int64_t>(streams_.size()));
  return state;
}

size_t StreamTable::size() const {
  MutexLock lock(mutex_);
  return streams_.size();
}

}  // namespace perch::pipeline
