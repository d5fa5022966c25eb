// BackgroundCalls: runs blocking calls (a Scheduler::Submit, a session's
// Run) on threads of their own and collects their answers, so that a test
// can hold requests in flight and wait, with a deadline, for answers.
//
// Threading: Start, AwaitAnswers, answer and JoinAll are called from the
// test's thread; the calls run on their own threads.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "core/status.h"
#include "tensor/tensor.h"

namespace perch {

class BackgroundCalls {
 public:
  using Answer = Result<std::vector<Tensor>>;

  BackgroundCalls() = default;
  ~BackgroundCalls();  // joins: release whatever the calls wait on first
  BackgroundCalls(const BackgroundCalls&) = delete;
  BackgroundCalls& operator=(const BackgroundCalls&) = delete;

  // Starts `call` on a new thread; returns its number, counting from 0.
  int Start(std::function<Answer()> call);
  // Waits until `count` calls have answered; false when `timeout` passes
  // first (the test must fail then).
  [[nodiscard]] bool AwaitAnswers(size_t count,
                                  std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // The answer of call `id`, which must have answered.
  Answer answer(int id) const;
  // The calls that answered, in the order they did.
  std::vector<int> answered() const;
  void JoinAll();

 private:
  std::vector<std::thread> threads_;
  mutable std::mutex mutex_;
  std::condition_variable answered_;
  std::map<int, Answer> answers_;  // guarded by mutex_
  std::vector<int> order_;         // guarded by mutex_
};

}  // namespace perch
