#include "models/scheduler.h"

#include <gtest/gtest.h>

#include <cstring>
#include <mutex>
#include <thread>

#include "testing/background_calls.h"
#include "testing/fake_engine.h"

namespace perch {
namespace {

using std::chrono::milliseconds;
using Clock = Scheduler::Clock;

// x of `rows` rows, every element `value`.
Tensor Input(int64_t rows, float value) {
  Tensor tensor{.name = "x", .datatype = DataType::kFp32, .shape = {rows, 2}, .data = {}};
  for (int64_t i = 0; i < rows * 2; ++i) {
    const auto* bytes = reinterpret_cast<const char*>(&value);
    tensor.data.append(bytes, sizeof(float));
  }
  return tensor;
}

std::vector<float> Values(const Tensor& tensor) {
  std::vector<float> values(tensor.data.size() / sizeof(float));
  std::memcpy(values.data(), tensor.data.data(), values.size() * sizeof(float));
  return values;
}

// Instances and queue size as given, no batching.
ModelConfig Queued(int instances, int64_t max_queue_size = 64) {
  ModelConfig config;
  config.instances = instances;
  config.max_queue_size = max_queue_size;
  return config;
}

// Dynamic batching whose delay is far longer than any test: a batch goes
// when it is full or of a preferred size, never because time passed (and,
// unless `wait_when_idle` is false, not because the model was idle).
ModelConfig Batching(int64_t max_batch_size, std::vector<int64_t> preferred = {},
                     bool wait_when_idle = true) {
  ModelConfig config;
  config.max_batch_size = max_batch_size;
  config.dynamic_batching = DynamicBatching{.preferred_batch_sizes = std::move(preferred),
                                            .max_queue_delay_us = 60'000'000,
                                            .wait_when_idle = wait_when_idle};
  return config;
}

// Polls `condition` until it holds or `timeout` passes; false then, and the
// test must fail.
template <typename Condition>
[[nodiscard]] bool Eventually(Condition condition,
                              std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

class SchedulerTest : public ::testing::Test {
 protected:
  ~SchedulerTest() override {
    // A failed assertion may leave runs held: let them finish before the
    // request threads are joined.
    runs_->Release();
    calls_.JoinAll();
    scheduler_.Stop();
  }

  // A model whose runs add `add` to the input.
  std::shared_ptr<LoadedModel> Model(ModelConfig config, float add = 0) {
    return std::make_shared<LoadedModel>(
        "fake", 1, std::move(config), FakeSignature(),
        std::make_unique<FakeSession>(FakeModel{.add = add}, runs_), metrics_);
  }

  // Submits on a thread of its own; returns the call's number.
  int SubmitInBackground(const std::shared_ptr<LoadedModel>& model, Tensor input,
                         std::optional<Clock::time_point> deadline = std::nullopt) {
    return calls_.Start([this, model, input = std::move(input), deadline] {
      return scheduler_.Submit(model, {input}, {"y"}, deadline);
    });
  }

  std::shared_ptr<FakeRuns> runs_ = std::make_shared<FakeRuns>();
  MetricsRegistry metrics_;
  Scheduler scheduler_{SchedulerOptions{.workers = 4}};
  BackgroundCalls calls_;
};

// A session that notes the thread that ran it and the deadline and
// parameters it was given; it waits on another process, as a process
// model's does, when `waits` is set.
class WaitingSession : public FakeSession {
 public:
  WaitingSession(FakeModel model, std::shared_ptr<FakeRuns> runs, bool waits = true)
      : FakeSession(model, std::move(runs)), waits_(waits) {}
  bool WaitsOnAnotherProcess() const override { return waits_; }
  Result<std::vector<Tensor>> RunWithContext(const std::vector<Tensor>& inputs,
                                             const std::vector<std::string>& output_names,
                                             const RunContext& context) override {
    {
      std::lock_guard lock(mutex);
      threads.push_back(std::this_thread::get_id());
      deadlines.push_back(context.deadline);
      parameters.push_back(context.parameters);
    }
    return Run(inputs, output_names);
  }
  std::mutex mutex;
  std::vector<std::thread::id> threads;                     // guarded by mutex
  std::vector<std::optional<Clock::time_point>> deadlines;  // guarded by mutex
  std::vector<InferParameters> parameters;                  // guarded by mutex

 private:
  const bool waits_;
};

TEST_F(SchedulerTest, ARequestRunsOnTheCallingThreadWhileAWorkerIsIdle) {
  scheduler_.Start();
  auto session = std::make_unique<WaitingSession>(FakeModel{.add = 1}, runs_, false);
  WaitingSession& recorded = *session;
  const auto model = std::make_shared<LoadedModel>("fake", 1, Queued(1), FakeSignature(),
                                                   std::move(session), metrics_);
  // With a deadline a worker runs it, so that the deadline can answer while
  // the model still computes: the model has not shown it is quick yet.
  ASSERT_TRUE(
      scheduler_.Submit(model, {Input(1, 2)}, {"y"}, Clock::now() + std::chrono::seconds(30)).ok());
  const auto outputs = scheduler_.Submit(model, {Input(1, 2)}, {"y"}, std::nullopt);
  ASSERT_TRUE(outputs.ok()) << outputs.status().message();
  EXPECT_EQ(Values((*outputs)[0]), (std::vector<float>{3, 3}));
  // Quick now (its runs took far less than kQuickRun): a far deadline runs
  // here as well, a near one still on a worker.
  ASSERT_TRUE(
      scheduler_.Submit(model, {Input(1, 2)}, {"y"}, Clock::now() + std::chrono::seconds(30)).ok());
  ASSERT_TRUE(
      scheduler_.Submit(model, {Input(1, 2)}, {"y"}, Clock::now() + kQuickRunDeadline / 4).ok());
  std::lock_guard lock(recorded.mutex);
  ASSERT_EQ(recorded.threads.size(), 4U);
  EXPECT_NE(recorded.threads[0], std::this_thread::get_id());
  EXPECT_EQ(recorded.threads[1], std::this_thread::get_id());
  EXPECT_EQ(recorded.threads[2], std::this_thread::get_id());
  EXPECT_NE(recorded.threads[3], std::this_thread::get_id());
}

TEST_F(SchedulerTest, AQuickModelRunOnTheCallerPastItsDeadlineIsDeadlineExceeded) {
  scheduler_.Start();
  auto session = std::make_unique<WaitingSession>(FakeModel{}, runs_, false);
  WaitingSession& recorded = *session;
  const auto model = std::make_shared<LoadedModel>("fake", 1, Queued(1), FakeSignature(),
                                                   std::move(session), metrics_);
  ASSERT_TRUE(scheduler_.Submit(model, {Input(1, 0)}, {"y"}, std::nullopt).ok());
  // Quick so far, so it runs here; this run overshoots its deadline.
  runs_->SetLatency(milliseconds(150));
  const auto late =
      scheduler_.Submit(model, {Input(1, 0)}, {"y"}, Clock::now() + kQuickRunDeadline * 3);
  EXPECT_EQ(late.status().code(), StatusCode::kDeadlineExceeded);
  std::lock_guard lock(recorded.mutex);
  ASSERT_EQ(recorded.threads.size(), 2U);
  EXPECT_EQ(recorded.threads[1], std::this_thread::get_id());
}

TEST_F(SchedulerTest, RunsAtOnceOnlyForAQuickModelThatWouldStartNow) {
  scheduler_.Start();
  const auto model = Model(Queued(1));
  EXPECT_FALSE(scheduler_.RunsAtOnce(*model));  // no run yet: not known to be quick
  ASSERT_TRUE(scheduler_.Submit(model, {Input(1, 0)}, {"y"}, std::nullopt).ok());
  EXPECT_TRUE(scheduler_.RunsAtOnce(*model));
  runs_->Hold();
  SubmitInBackground(model, Input(1, 0));
  ASSERT_TRUE(runs_->AwaitHeld(1));
  EXPECT_FALSE(scheduler_.RunsAtOnce(*model));  // its one instance is taken
  runs_->Release();
  ASSERT_TRUE(calls_.AwaitAnswers(1));

  const auto batching = Model(Batching(4, {1}));
  ASSERT_TRUE(scheduler_.Submit(batching, {Input(1, 0)}, {"y"}, std::nullopt).ok());
  EXPECT_FALSE(scheduler_.RunsAtOnce(*batching));

  const auto slow = Model(Queued(1));
  runs_->SetLatency(kQuickRun * 5);
  ASSERT_TRUE(scheduler_.Submit(slow, {Input(1, 0)}, {"y"}, std::nullopt).ok());
  EXPECT_FALSE(scheduler_.RunsAtOnce(*slow));
}

TEST_F(SchedulerTest, CallersComputeNoMoreAtOnceThanThereAreWorkers) {
  Scheduler one_worker(SchedulerOptions{.workers = 1});
  one_worker.Start();
  const auto model = Model(Queued(4));
  runs_->Hold();
  for (int i = 0; i < 3; ++i) {
    calls_.Start([&one_worker, model] {
      return one_worker.Submit(model, {Input(1, 0)}, {"y"}, std::nullopt);
    });
  }
  ASSERT_TRUE(runs_->AwaitHeld(1));
  runs_->Release();
  ASSERT_TRUE(calls_.AwaitAnswers(3));
  for (int call = 0; call < 3; ++call) {
    EXPECT_TRUE(calls_.answer(call).ok()) << call;
  }
  // The model allows four at once; the one worker's share allows one.
  EXPECT_EQ(runs_->max_concurrent(), 1);
}

TEST_F(SchedulerTest, ASessionWaitingOnAnotherProcessRunsOnTheCallingThread) {
  scheduler_.Start();
  auto session = std::make_unique<WaitingSession>(FakeModel{.add = 1}, runs_);
  WaitingSession& waiting = *session;
  const auto model = std::make_shared<LoadedModel>("fake", 1, Queued(1), FakeSignature(),
                                                   std::move(session), metrics_);
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  const InferParameters parameters{{"stream_id", std::string("mic-1")}, {"gain", int64_t{2}}};
  const auto outputs = scheduler_.Submit(model, {Input(1, 2)}, {"y"}, deadline, parameters);
  ASSERT_TRUE(outputs.ok()) << outputs.status().message();
  EXPECT_EQ(Values((*outputs)[0]), (std::vector<float>{3, 3}));
  std::lock_guard lock(waiting.mutex);
  EXPECT_EQ(waiting.threads, (std::vector<std::thread::id>{std::this_thread::get_id()}));
  EXPECT_EQ(waiting.deadlines, (std::vector<std::optional<Clock::time_point>>{deadline}));
  EXPECT_EQ(waiting.parameters, (std::vector<InferParameters>{parameters}));
}

TEST_F(SchedulerTest, ASessionWaitingOnAnotherProcessKeepsItsInstanceLimit) {
  scheduler_.Start();
  const auto model =
      std::make_shared<LoadedModel>("fake", 1, Queued(1), FakeSignature(),
                                    std::make_unique<WaitingSession>(FakeModel{}, runs_), metrics_);
  runs_->Hold();
  SubmitInBackground(model, Input(1, 0));
  ASSERT_TRUE(runs_->AwaitHeld(1));
  SubmitInBackground(model, Input(1, 0));  // queued: the one instance is busy
  SubmitInBackground(model, Input(1, 0));
  runs_->Release();
  ASSERT_TRUE(calls_.AwaitAnswers(3));
  for (int call = 0; call < 3; ++call) {
    EXPECT_TRUE(calls_.answer(call).ok()) << call;
  }
  EXPECT_EQ(runs_->max_concurrent(), 1);
}

TEST_F(SchedulerTest, RunsARequestOnItsModel) {
  scheduler_.Start();
  const auto model = Model(ModelConfig{}, 1.5F);
  const auto outputs = scheduler_.Submit(model, {Input(1, 2)}, {"y"}, std::nullopt);
  ASSERT_TRUE(outputs.ok()) << outputs.status().message();
  ASSERT_EQ(outputs->size(), 1U);
  EXPECT_EQ((*outputs)[0].name, "y");
  EXPECT_EQ(Values((*outputs)[0]), (std::vector<float>{3.5F, 3.5F}));
}

TEST_F(SchedulerTest, PassesTheEngineErrorOn) {
  scheduler_.Start();
  runs_->SetError(InvalidArgument("the fake refuses"));
  const auto outputs = scheduler_.Submit(Model(ModelConfig{}), {Input(1, 0)}, {"y"}, std::nullopt);
  EXPECT_EQ(outputs.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(outputs.status().message(), "the fake refuses");
}

TEST_F(SchedulerTest, RequestAnsweredBeforeItsDeadlineSucceedsAndIsTimed) {
  scheduler_.Start();
  runs_->SetLatency(std::chrono::milliseconds(5));
  const auto model = Model(ModelConfig{});
  const auto outputs =
      scheduler_.Submit(model, {Input(1, 0)}, {"y"}, Clock::now() + std::chrono::seconds(10));
  ASSERT_TRUE(outputs.ok()) << outputs.status().message();
  const auto compute = model->compute_seconds.Read();
  EXPECT_EQ(compute.count, 1U);
  EXPECT_GE(compute.sum, 0.005);
  EXPECT_EQ(model->batch_size.Read().count, 1U);
}

TEST_F(SchedulerTest, DeadlinePassesWhileTheModelRuns) {
  scheduler_.Start();
  runs_->Hold();
  // Long enough for a worker to take the request into the model first, even
  // on a loaded machine; a request still queued at its deadline never runs.
  const int call =
      SubmitInBackground(Model(ModelConfig{}), Input(1, 0), Clock::now() + milliseconds(500));
  ASSERT_TRUE(runs_->AwaitHeld(1));
  // The run is still held: only the deadline can have answered.
  ASSERT_TRUE(calls_.AwaitAnswers(1));
  const auto answer = calls_.answer(call);
  EXPECT_EQ(answer.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(answer.status().message().find("did not answer within the request's timeout"),
            std::string::npos)
      << answer.status().message();
}

TEST_F(SchedulerTest, RequestWhoseDeadlinePassesInTheQueueNeverRuns) {
  scheduler_.Start();
  const auto model = Model(Queued(1));
  runs_->Hold();
  const int first = SubmitInBackground(model, Input(1, 0));
  ASSERT_TRUE(runs_->AwaitHeld(1));
  const int late = SubmitInBackground(model, Input(1, 0), Clock::now() + milliseconds(20));
  ASSERT_TRUE(calls_.AwaitAnswers(1));
  EXPECT_EQ(calls_.answer(late).status().code(), StatusCode::kDeadlineExceeded);

  runs_->Release();
  ASSERT_TRUE(calls_.AwaitAnswers(2));
  EXPECT_TRUE(calls_.answer(first).ok()) << calls_.answer(first).status().message();
  scheduler_.Stop();  // runs or expires whatever is still queued
  EXPECT_EQ(runs_->started(), 1);
}

TEST_F(SchedulerTest, FullQueueRefusesWithResourceExhausted) {
  scheduler_.Start();
  const auto model = Model(Queued(1, 1));
  runs_->Hold();
  const int running = SubmitInBackground(model, Input(1, 0));
  ASSERT_TRUE(runs_->AwaitHeld(1));
  // One of the next two takes the only queue slot; the other is refused at
  // once, while the first is still held.
  SubmitInBackground(model, Input(1, 0));
  SubmitInBackground(model, Input(1, 0));
  ASSERT_TRUE(calls_.AwaitAnswers(1));
  const int refused = calls_.answered().front();
  EXPECT_NE(refused, running);
  const auto answer = calls_.answer(refused);
  EXPECT_EQ(answer.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(answer.status().message().find("max_queue_size"), std::string::npos)
      << answer.status().message();

  runs_->Release();
  ASSERT_TRUE(calls_.AwaitAnswers(3));
  for (int call = 0; call < 3; ++call) {
    EXPECT_EQ(calls_.answer(call).ok(), call != refused) << call;
  }
}

TEST_F(SchedulerTest, DynamicBatchingMergesRequestsUpToMaxBatchSize) {
  scheduler_.Start();
  const auto model = Model(Batching(4), 10);
  for (int i = 0; i < 4; ++i) {
    SubmitInBackground(model, Input(1, static_cast<float>(i)));
  }
  ASSERT_TRUE(calls_.AwaitAnswers(4));
  EXPECT_EQ(runs_->batch_rows(), (std::vector<int64_t>{4}));
  for (int i = 0; i < 4; ++i) {
    const auto answer = calls_.answer(i);
    ASSERT_TRUE(answer.ok()) << answer.status().message();
    // Each request gets its own row back, not its neighbour's.
    EXPECT_EQ((*answer)[0].shape, (Shape{1, 2}));
    EXPECT_EQ(Values((*answer)[0]), (std::vector<float>(2, static_cast<float>(i) + 10)));
  }
}

TEST_F(SchedulerTest, DynamicBatchingDispatchesAPreferredSizeAtOnce) {
  scheduler_.Start();
  const auto model = Model(Batching(16, {3}));
  SubmitInBackground(model, Input(2, 0));
  SubmitInBackground(model, Input(1, 0));
  ASSERT_TRUE(calls_.AwaitAnswers(2));
  EXPECT_EQ(runs_->batch_rows(), (std::vector<int64_t>{3}));
  EXPECT_EQ((*calls_.answer(0))[0].shape, (Shape{2, 2}));
  EXPECT_EQ((*calls_.answer(1))[0].shape, (Shape{1, 2}));
}

TEST_F(SchedulerTest, DynamicBatchingRunsALoneRequestAtOnceWhenItsModelIsIdle) {
  scheduler_.Start();
  // A 60 s delay: an answer within the wait below means nobody waited it.
  const auto model = Model(Batching(4, {}, /*wait_when_idle=*/false), 10);
  SubmitInBackground(model, Input(1, 1));
  ASSERT_TRUE(calls_.AwaitAnswers(1));
  EXPECT_EQ(runs_->batch_rows(), (std::vector<int64_t>{1}));
  EXPECT_EQ(Values((*calls_.answer(0))[0]), (std::vector<float>(2, 11)));
}

TEST_F(SchedulerTest, DynamicBatchingBatchesWhatQueuedWhileItsModelRan) {
  scheduler_.Start();
  const auto model = Model(Batching(4, {}, /*wait_when_idle=*/false), 10);
  runs_->Hold();
  SubmitInBackground(model, Input(1, 0));
  ASSERT_TRUE(runs_->AwaitHeld(1));
  for (int i = 1; i < 4; ++i) {
    SubmitInBackground(model, Input(1, static_cast<float>(i)));
  }
  // Its one instance is busy: the three wait, counted, for it.
  ASSERT_TRUE(Eventually([&] { return model->pending.Value() == 3; }))
      << model->pending.Value() << " pending";
  runs_->Release();
  ASSERT_TRUE(calls_.AwaitAnswers(4));
  EXPECT_EQ(runs_->batch_rows(), (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(model->pending.Value(), 0);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(Values((*calls_.answer(i))[0]), (std::vector<float>(2, static_cast<float>(i) + 10)));
  }
}

TEST_F(SchedulerTest, FailedBatchFailsEveryRequestInIt) {
  scheduler_.Start();
  runs_->SetError(Internal("the fake broke"));
  const auto model = Model(Batching(2));
  SubmitInBackground(model, Input(1, 0));
  SubmitInBackground(model, Input(1, 0));
  ASSERT_TRUE(calls_.AwaitAnswers(2));
  EXPECT_EQ(runs_->batch_rows(), (std::vector<int64_t>{2}));
  EXPECT_EQ(calls_.answer(0).status().code(), StatusCode::kInternal);
  EXPECT_EQ(calls_.answer(1).status().code(), StatusCode::kInternal);
}

TEST_F(SchedulerTest, InstancesBoundTheBatchesRunningAtOnce) {
  scheduler_.Start();
  const auto model = Model(Queued(2));
  runs_->Hold();
  for (int i = 0; i < 4; ++i) {
    SubmitInBackground(model, Input(1, 0));
  }
  // Two run at once (four workers are free), the other two wait their turn.
  ASSERT_TRUE(runs_->AwaitHeld(2));
  runs_->Release();
  ASSERT_TRUE(calls_.AwaitAnswers(4));
  EXPECT_EQ(runs_->started(), 4);
  EXPECT_EQ(runs_->max_concurrent(), 2);
}

TEST_F(SchedulerTest, OneInstanceRunsOneBatchAtATime) {
  scheduler_.Start();
  const auto model = Model(Queued(1));
  runs_->Hold();
  for (int i = 0; i < 3; ++i) {
    SubmitInBackground(model, Input(1, 0));
  }
  ASSERT_TRUE(runs_->AwaitHeld(1));
  runs_->Release();
  ASSERT_TRUE(calls_.AwaitAnswers(3));
  EXPECT_EQ(runs_->max_concurrent(), 1);
}

TEST_F(SchedulerTest, ModelsDoNotShareTheirInstances) {
  scheduler_.Start();
  const auto first = Model(Queued(1));
  const auto second = Model(Queued(1));
  runs_->Hold();
  SubmitInBackground(first, Input(1, 0));
  SubmitInBackground(second, Input(1, 0));
  ASSERT_TRUE(runs_->AwaitHeld(2));
}

TEST_F(SchedulerTest, RefusesOnceStopped) {
  scheduler_.Start();
  scheduler_.Stop();
  const auto outputs = scheduler_.Submit(Model(ModelConfig{}), {Input(1, 0)}, {"y"}, std::nullopt);
  EXPECT_EQ(outputs.status().code(), StatusCode::kUnavailable);
}

}  // namespace
}  // namespace perch
