// Scheduler: the inference workers. Transports hand requests to Submit and
// wait; a fixed pool of workers runs them, per model in FIFO order, at most
// `instances` batches of one model at a time, merging requests into batches
// for models with dynamic batching.
//
// Threading: Submit is thread-safe and blocks the calling (transport) thread
// until its request is done, refused or past its deadline. Start and Stop
// are called from one controlling thread. A request runs on the calling
// thread instead of a worker when it may start at once and a worker would
// otherwise sit idle: nothing of its model queued, an instance free (with
// dynamic batching: no batch of it running, and wait_when_idle off), no
// deadline (a worker's run lets Submit answer at the deadline while the
// model still computes) unless the model is quick and the deadline far (see
// kQuickRun), and fewer runs in progress than
// workers, so that no more models compute at once than there are workers.
// The caller waits for its answer either way; what it spares is the hand-off
// to a worker and back (two thread wake-ups, most of a tiny model's time).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/status.h"
#include "core/thread_annotations.h"
#include "models/model_manager.h"
#include "tensor/tensor.h"

namespace perch {

// A model whose runs took at most kQuickRun lately (LoadedModel::
// typical_run) is quick: a request of it with a deadline at least
// kQuickRunDeadline away still runs on the calling thread when a worker is
// idle, and an answer that comes past the deadline all the same is
// DeadlineExceeded (late by about the run's overshoot, not a worker's
// hand-off early). A transport may run a quick model's request on a thread
// that must not wait long (Scheduler::RunsAtOnce).
inline constexpr std::chrono::microseconds kQuickRun{200};
inline constexpr std::chrono::milliseconds kQuickRunDeadline{20};

struct SchedulerOptions {
  int workers = 0;  // 0: one per core
  // Every model's request runs on the calling thread when it may start at
  // once (nothing queued before it, an instance free), not only a model
  // that waits on its own server. For callers that are workers themselves
  // (perch batch), which then spare two thread hand-offs per request.
  // Servers leave it off: their callers run a request themselves only while
  // a worker is idle (see above).
  bool run_on_caller_when_free = false;
};

class Scheduler {
 public:
  using Clock = std::chrono::steady_clock;

  explicit Scheduler(SchedulerOptions options);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  void Start();
  // Stops taking requests, runs those already queued, and joins the workers.
  void Stop();

  // Runs `inputs` (validated, in the model's input order) on `model` and
  // returns `output_names`; the session gets the request's `parameters`
  // (only requests with equal parameters are batched together).
  // ResourceExhausted when the model's queue is full; DeadlineExceeded past
  // `deadline`; Unavailable once stopping.
  Result<std::vector<Tensor>> Submit(const std::shared_ptr<LoadedModel>& model,
                                     std::vector<Tensor> inputs,
                                     std::vector<std::string> output_names,
                                     std::optional<Clock::time_point> deadline,
                                     InferParameters parameters = {});

  // Whether a request of `model` without a deadline, submitted now, would
  // run on the calling thread at once, and the model is quick (kQuickRun):
  // REST then runs it on its I/O thread, sparing two more hand-offs.
  bool RunsAtOnce(const LoadedModel& model) EXCLUDES(mutex_);

 private:
  struct Pending {
    std::vector<Tensor> inputs;
    std::vector<std::string> output_names;
    std::optional<Clock::time_point> deadline;
    InferParameters parameters;
    Clock::time_point enqueued;
    std::promise<Result<std::vector<Tensor>>> done;
  };
  struct ModelQueue {
    std::shared_ptr<LoadedModel> model;  // alive while anything of it is queued or running
    std::deque<std::shared_ptr<Pending>> pending;
    int active = 0;
    bool listed = false;  // in ready_, or being batched by a worker
  };

  void WorkerLoop() EXCLUDES(mutex_);
  // Takes the next batch of `queue`, waiting up to the batching delay for it
  // to fill. `lock` holds mutex_; it is released while waiting.
  std::vector<std::shared_ptr<Pending>> TakeBatch(ModelQueue& queue, MutexLock& lock)
      REQUIRES(mutex_);
  void RunBatch(LoadedModel& model, const std::vector<std::shared_ptr<Pending>>& batch)
      EXCLUDES(mutex_);
  // One request, answered by return: a caller that runs its own request
  // needs no promise (setting one costs a futex wake even with no waiter).
  Result<std::vector<Tensor>> RunOne(LoadedModel& model, Pending& pending) EXCLUDES(mutex_);
  void List(ModelQueue& queue) REQUIRES(mutex_);
  // Whether Submit runs a request of `model` on the calling thread.
  bool RunsOnCaller(const LoadedModel& model, const ModelQueue* queue,
                    std::optional<Clock::time_point> deadline) const REQUIRES(mutex_);
  // A run of `queue`'s model ended: frees its instance (and its worker's
  // share when it `computed`), lists what waits, and forgets an idle queue
  // (`queue` is invalid after).
  void FinishRun(const LoadedModel* key, ModelQueue& queue, bool computed) REQUIRES(mutex_);

  const SchedulerOptions options_;
  Mutex mutex_;
  std::vector<std::thread> workers_ GUARDED_BY(mutex_);
  int worker_count_ GUARDED_BY(mutex_) = 0;
  // Runs in progress that compute in perch (all but those of sessions that
  // wait on another process), on workers and callers: at most worker_count_
  // but for callers that are workers themselves (run_on_caller_when_free).
  int computing_ GUARDED_BY(mutex_) = 0;
  std::condition_variable work_ready_;  // a model was listed in ready_
  std::condition_variable batch_grew_;  // a request joined a queue a batch waits on
  int batching_waiters_ GUARDED_BY(mutex_) = 0;
  std::map<const LoadedModel*, ModelQueue> queues_ GUARDED_BY(mutex_);
  std::deque<const LoadedModel*> ready_ GUARDED_BY(mutex_);
  bool stopping_ GUARDED_BY(mutex_) = false;
};

}  // namespace perch
