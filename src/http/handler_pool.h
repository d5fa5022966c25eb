// Internal to http/: the fixed set of threads that run route handlers, so
// that a handler that waits (an inference waits for its answer) holds a
// handler thread, never an I/O thread. Not a public header.
//
// Threading: Post from any thread; Stop from one controlling thread. The
// queue needs no bound of its own: each connection has at most one request
// in flight, and the server caps connections.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace perch::http {

class HandlerPool {
 public:
  explicit HandlerPool(int threads);
  ~HandlerPool();
  HandlerPool(const HandlerPool&) = delete;
  HandlerPool& operator=(const HandlerPool&) = delete;

  void Post(std::function<void()> task);
  // Lets the tasks running finish, drops the queued ones, joins. Idempotent.
  void Stop();

 private:
  void Run();

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> tasks_;  // guarded by mutex_
  bool stopping_ = false;                    // guarded by mutex_
  std::vector<std::thread> threads_;
};

}  // namespace perch::http
