#include "testing/background_calls.h"

namespace perch {

BackgroundCalls::~BackgroundCalls() { JoinAll(); }

int BackgroundCalls::Start(std::function<Answer()> call) {
  const int id = static_cast<int>(threads_.size());
  threads_.emplace_back([this, id, call = std::move(call)] {
    Answer answer = call();
    {
      std::lock_guard lock(mutex_);
      answers_.emplace(id, std::move(answer));
      order_.push_back(id);
    }
    answered_.notify_all();
  });
  return id;
}

bool BackgroundCalls::AwaitAnswers(size_t count, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return answered_.wait_for(lock, timeout, [&] { return order_.size() >= count; });
}

BackgroundCalls::Answer BackgroundCalls::answer(int id) const {
  std::lock_guard lock(mutex_);
  const auto found = answers_.find(id);
  if (found == answers_.end()) {
    return Internal("call " + std::to_string(id) + " has not answered");
  }
  return found->second;
}

std::vector<int> BackgroundCalls::answered() const {
  std::lock_guard lock(mutex_);
  return order_;
}

void BackgroundCalls::JoinAll() {
  for (auto& thread : threads_) {
    if (thread.joinable()) {
      thread.join();
    }
  }
}

}  // namespace perch
