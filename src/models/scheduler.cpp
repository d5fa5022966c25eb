#include "models/scheduler.h"

#include <fmt/format.h>

#include <algorithm>

#include "models/batching.h"

namespace perch {
namespace {

double SecondsBetween(Scheduler::Clock::time_point start, Scheduler::Clock::time_point end) {
  return std::chrono::duration<double>(end - start).count();
}

}  // namespace

Scheduler::Scheduler(SchedulerOptions options) : options_(options) {}

Scheduler::~Scheduler() { Stop(); }

void Scheduler::Start() {
  const int workers = options_.workers > 0
                          ? options_.workers
                          : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  MutexLock lock(mutex_);
  worker_count_ = workers;
  for (int i = 0; i < workers; ++i) {
    workers_.emplace_back([this] { WorkerLoop(); });
  }
}

void Scheduler::Stop() {
  std::vector<std::thread> workers;
  {
    MutexLock lock(mutex_);
    stopping_ = true;
    workers.swap(workers_);
  }
  work_ready_.notify_all();
  batch_grew_.notify_all();
  // Joined without the lock: the workers take it to finish the queue.
  for (auto& worker : workers) {
    worker.join();
  }
}

Result<std::vector<Tensor>> Scheduler::Submit(const std::shared_ptr<LoadedModel>& model,
                                              std::vector<Tensor> inputs,
                                              std::vector<std::string> output_names,
                                              std::optional<Clock::time_point> deadline,
                                              InferParameters parameters) {
  auto pending = std::make_shared<Pending>();
  pending->inputs = std::move(inputs);
  pending->output_names = std::move(output_names);
  pending->deadline = deadline;
  pending->parameters = std::move(parameters);
  pending->enqueued = Clock::now();
  std::future<Result<std::vector<Tensor>>> done;
  {
    MutexLock lock(mutex_);
    if (stopping_ || workers_.empty()) {
      return Unavailable("the agent is shutting down");
    }
    ModelQueue& queue = queues_[model.get()];
    if (RunsOnCaller(*model, &queue, deadline)) {
      const bool computes = !model->session().WaitsOnAnotherProcess();
      queue.model = model;
      ++queue.active;
      computing_ += computes ? 1 : 0;
      lock.Unlock();
      auto outputs = RunOne(*model, *pending);
      lock.Lock();
      FinishRun(model.get(), queue, computes);
      // A quick model run here in a worker's stead answers as a worker's
      // run would have: DeadlineExceeded once past the deadline.
      const bool in_workers_stead = !options_.run_on_caller_when_free && computes;
      if (in_workers_stead && deadline && Clock::now() > *deadline) {
        return Status(
            StatusCode::kDeadlineExceeded,
            fmt::format("model '{}' did not answer within the request's timeout", model->name()));
      }
      return outputs;
    }
    if (static_cast<int64_t>(queue.pending.size()) >= model->config().max_queue_size) {
      return ResourceExhausted(
          fmt::format("model '{}' has {} requests waiting, its max_queue_size; retry later",
                      model->name(), queue.pending.size()));
    }
    queue.model = model;
    done = pending->done.get_future();
    queue.pending.push_back(std::move(pending));
    model->pending.Set(static_cast<int64_t>(queue.pending.size()));
    List(queue);
    if (batching_waiters_ > 0) {
      batch_grew_.notify_all();
    }
  }
  if (deadline && done.wait_until(*deadline) == std::future_status::timeout) {
    return Status(
        StatusCode::kDeadlineExceeded,
        fmt::format("model '{}' did not answer within the request's timeout", model->name()));
  }
  return done.get();
}

bool Scheduler::RunsAtOnce(const LoadedModel& model) {
  const auto typical = model.typical_run();
  if (typical.count() == 0 || typical > kQuickRun || model.session().WaitsOnAnotherProcess()) {
    return false;
  }
  MutexLock lock(mutex_);
  if (stopping_ || workers_.empty()) {
    return false;
  }
  const auto queue = queues_.find(&model);
  return RunsOnCaller(model, queue == queues_.end() ? nullptr : &queue->second, std::nullopt);
}

bool Scheduler::RunsOnCaller(const LoadedModel& model, const ModelQueue* queue,
                             std::optional<Clock::time_point> deadline) const {
  if (queue != nullptr && (!queue->pending.empty() || queue->active >= model.config().instances)) {
    return false;
  }
  // A batching model's request waits for company unless the model is idle
  // and need not wait then (TakeBatch).
  if (const auto& batching = model.config().dynamic_batching;
      batching && (batching->wait_when_idle || (queue != nullptr && queue->active > 0))) {
    return false;
  }
  // A model that waits on its own server, or any model when the caller is
  // a worker itself, runs here whenever it may start: the same limits hold.
  if (options_.run_on_caller_when_free || model.session().WaitsOnAnotherProcess()) {
    return true;
  }
  // Otherwise only in a worker's stead: one is idle (no model listed for
  // one, fewer runs computing than workers) and no deadline needs a
  // worker's run to be answered while the model still computes: none, or
  // one far beyond what a quick model takes.
  if (!ready_.empty() || computing_ >= worker_count_) {
    return false;
  }
  if (!deadline) {
    return true;
  }
  const auto typical = model.typical_run();
  return typical.count() > 0 && typical <= kQuickRun &&
         *deadline - Clock::now() >= kQuickRunDeadline;
}

void Scheduler::List(ModelQueue& queue) {
  if (!queue.listed && !queue.pending.empty() && queue.active < queue.model->config().instances) {
    queue.listed = true;
    ready_.push_back(queue.model.get());
    // One model listed is work for one worker: waking them all costs every
    // other worker a context switch for nothing.
    work_ready_.notify_one();
  }
}

void Scheduler::WorkerLoop() {
  MutexLock lock(mutex_);
  while (true) {
    // A listed model waits while callers compute in every worker's stead.
    while (!stopping_ && (ready_.empty() || computing_ >= worker_count_)) {
      lock.Wait(work_ready_);
    }
    if (ready_.empty()) {
      return;  // stopping, and nothing is left to run
    }
    const LoadedModel* key = ready_.front();
    ready_.pop_front();
    ModelQueue& queue = queues_.at(key);
    auto batch = TakeBatch(queue, lock);
    queue.model->pending.Set(static_cast<int64_t>(queue.pending.size()));
    queue.listed = false;
    if (batch.empty()) {
      List(queue);
      continue;
    }
    ++queue.active;
    const std::shared_ptr<LoadedModel> model = queue.model;
    const bool computes = !model->session().WaitsOnAnotherProcess();
    computing_ += computes ? 1 : 0;
    List(queue);  // another worker may start the next batch meanwhile
    lock.Unlock();
    RunBatch(*model, batch);
    lock.Lock();
    FinishRun(key, queue, computes);
  }
}

void Scheduler::FinishRun(const LoadedModel* key, ModelQueue& queue, bool computed) {
  --queue.active;
  if (computed) {
    --computing_;
    // A model listed while every worker's share was taken can start now.
    if (!ready_.empty()) {
      work_ready_.notify_one();
    }
  }
  List(queue);
  if (queue.pending.empty() && queue.active == 0 && !queue.listed) {
    queues_.erase(key);
  }
}

std::vector<std::shared_ptr<Scheduler::Pending>> Scheduler::TakeBatch(ModelQueue& queue,
                                                                      MutexLock& lock) {
  const auto& config = queue.model->config();
  const auto expire = [&queue](Clock::time_point now) {
    std::erase_if(queue.pending, [now](const std::shared_ptr<Pending>& pending) {
      if (pending->deadline && *pending->deadline <= now) {
        pending->done.set_value(
            Status(StatusCode::kDeadlineExceeded,
                   "the request's timeout passed while it waited in the queue"));
        return true;
      }
      return false;
    });
  };
  expire(Clock::now());
  if (queue.pending.empty()) {
    return {};
  }
  if (!config.dynamic_batching) {
    auto single = std::move(queue.pending.front());
    queue.pending.pop_front();
    return {std::move(single)};
  }

  // Rows of the requests at the head of the queue that can join the oldest.
  const auto mergeable_rows = [&queue, &config]() {
    int64_t rows = 0;
    for (const auto& pending : queue.pending) {
      const int64_t more = pending->inputs.front().shape[0];
      if (!CanMerge(queue.pending.front()->inputs, pending->inputs) ||
          pending->output_names != queue.pending.front()->output_names ||
          pending->parameters != queue.pending.front()->parameters ||
          rows + more > config.max_batch_size) {
        break;
      }
      rows += more;
    }
    return rows;
  };
  const auto& preferred = config.dynamic_batching->preferred_batch_sizes;
  const auto full = [&]() {
    const int64_t rows = mergeable_rows();
    return rows >= config.max_batch_size ||
           std::find(preferred.begin(), preferred.end(), rows) != preferred.end();
  };
  const auto flush_at = queue.pending.front()->enqueued +
                        std::chrono::microseconds(config.dynamic_batching->max_queue_delay_us);
  // An idle model does not wait (DynamicBatching::wait_when_idle): what
  // arrives while this batch runs forms the next one. `listed` stays set
  // while waiting, so new requests of this model wake us instead of listing
  // the model for a second worker.
  const bool waits = config.dynamic_batching->wait_when_idle || queue.active > 0;
  ++batching_waiters_;
  while (waits && !stopping_ && !full() && lock.WaitUntil(batch_grew_, flush_at)) {
  }
  --batching_waiters_;
  expire(Clock::now());

  std::vector<std::shared_ptr<Pending>> batch;
  int64_t rows = 0;
  while (!queue.pending.empty()) {
    const auto& next = queue.pending.front();
    const int64_t more = next->inputs.front().shape[0];
    if (!batch.empty() &&
        (!CanMerge(batch.front()->inputs, next->inputs) ||
         next->output_names != batch.front()->output_names ||
         next->parameters != batch.front()->parameters || rows + more > config.max_batch_size)) {
      break;
    }
    rows += more;
    batch.push_back(std::move(queue.pending.front()));
    queue.pending.pop_front();
  }
  return batch;
}

Result<std::vector<Tensor>> Scheduler::RunOne(LoadedModel& model, Pending& pending) {
  const auto started = Clock::now();
  RunContext context{.deadline = pending.deadline, .parameters = std::move(pending.parameters)};
  auto outputs = model.session().RunWithContext(pending.inputs, pending.output_names, context);
  const auto finished = Clock::now();
  model.queue_seconds.Observe(SecondsBetween(pending.enqueued, started));
  model.compute_seconds.Observe(SecondsBetween(started, finished));
  model.batch_size.Observe(1);
  model.RecordRun(finished - started);
  return outputs;
}

void Scheduler::RunBatch(LoadedModel& model, const std::vector<std::shared_ptr<Pending>>& batch) {
  if (batch.size() == 1) {
    batch.front()->done.set_value(RunOne(model, *batch.front()));
    return;
  }
  const auto started = Clock::now();
  std::vector<int64_t> rows;
  // The batch is wanted until its last request's deadline; none if one of
  // them has none. Its requests' parameters are equal (TakeBatch).
  RunContext context{.deadline = batch.front()->deadline,
                     .parameters = std::move(batch.front()->parameters)};
  for (const auto& pending : batch) {
    context.deadline = context.deadline && pending->deadline
                           ? std::max(*context.deadline, *pending->deadline)
                           : std::optional<Clock::time_point>();
  }
  std::vector<const std::vector<Tensor>*> inputs;
  for (const auto& pending : batch) {
    inputs.push_back(&pending->inputs);
    rows.push_back(pending->inputs.front().shape[0]);
  }
  const Result<std::vector<Tensor>> outputs =
      model.session().RunWithContext(MergeBatch(inputs), batch.front()->output_names, context);
  const auto finished = Clock::now();
  for (const auto& pending : batch) {
    model.queue_seconds.Observe(SecondsBetween(pending->enqueued, started));
    model.compute_seconds.Observe(SecondsBetween(started, finished));
  }
  model.batch_size.Observe(static_cast<double>(batch.size()));
  model.RecordRun(finished - started);
  if (!outputs.ok()) {
    for (const auto& pending : batch) {
      pending->done.set_value(outputs.status());
    }
    return;
  }
  auto split = SplitBatch(*outputs, rows);
  for (size_t i = 0; i < batch.size(); ++i) {
    batch[i]->done.set_value(split.ok() ? Result<std::vector<Tensor>>(std::move((*split)[i]))
                                        : Result<std::vector<Tensor>>(split.status()));
  }
}

}  // namespace perch
