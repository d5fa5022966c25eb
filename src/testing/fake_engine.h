// FakeEngine: an Engine for unit tests, with no model runtime behind it. It
// computes something trivially checkable (every output is the first input
// plus a constant), and the test decides how loads and runs behave: a load
// that fails, runs that fail, take time, or hold until released, so that
// in-flight requests, queue limits and swaps can be tested without sleeps.
//
// A model file's content picks its behaviour: a test writes "v1" into one
// model.onnx and "broken" into another and tells the engine what each
// means. Content, not path, so that hard-linked copies (fleet releases)
// behave as their originals.
//
// Threading: every method is thread-safe; sessions may outlive the engine.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/status.h"
#include "engine/engine.h"

namespace perch {

// x: FP32 [-1, 2] -> y: FP32 [-1, 2]; dim 0 is the batch.
ModelSignature FakeSignature();

// How a model file loads and what its sessions compute.
struct FakeModel {
  ModelSignature signature = FakeSignature();
  float add = 0;           // every output is the first input, FP32, plus this
  Status load_error = {};  // not Ok: Load returns it
  // What its sessions' WaitsOnAnotherProcess answers: true stands for a
  // process model, whose runs wait instead of computing.
  bool waits_on_another_process = false;
};

// What the sessions of one engine share: how runs behave now, and what the
// runs so far did. Tests reach it through FakeEngine::runs() or give it to
// a FakeSession they make themselves.
class FakeRuns {
 public:
  // How long a run computes before it answers (simulated work, never used
  // to order anything in a test); 0 by default.
  void SetLatency(std::chrono::microseconds latency);
  // Runs started from now on fail with `error`; Ok makes them compute again.
  void SetError(Status error);
  // Runs started from now on wait, counted as held, until Release().
  void Hold();
  // Lets every held run go on; later runs no longer wait.
  void Release();

  // Waits until `count` runs are held at the same time; false when
  // `timeout` passes first (the test must fail then).
  [[nodiscard]] bool AwaitHeld(int count,
                               std::chrono::milliseconds timeout = std::chrono::seconds(10));
  int64_t started() const;
  int max_concurrent() const;  // the most runs inside Run at once, held ones included
  // Dim 0 of the first input of every run, in the order the runs started.
  std::vector<int64_t> batch_rows() const;
  int live_sessions() const;  // sessions made and not yet destroyed

  // For sessions: a run begins (waiting while held) and ends.
  Status BeginRun(int64_t rows);
  void EndRun();
  void SessionOpened();
  void SessionClosed();

 private:
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::chrono::microseconds latency_{0};  // guarded by mutex_
  Status error_;                          // guarded by mutex_
  bool holding_ = false;                  // guarded by mutex_
  int held_ = 0;                          // guarded by mutex_
  int running_ = 0;                       // guarded by mutex_
  int max_running_ = 0;                   // guarded by mutex_
  std::vector<int64_t> batch_rows_;       // guarded by mutex_
  int live_sessions_ = 0;                 // guarded by mutex_
};

class FakeSession : public Session {
 public:
  FakeSession(FakeModel model, std::shared_ptr<FakeRuns> runs);
  ~FakeSession() override;
  FakeSession(const FakeSession&) = delete;
  FakeSession& operator=(const FakeSession&) = delete;

  const ModelSignature& Signature() const override { return model_.signature; }
  bool WaitsOnAnotherProcess() const override { return model_.waits_on_another_process; }
  // Each of `output_names` is inputs[0] + add, named as asked.
  // InvalidArgument when inputs[0] is missing or not FP32; the error given
  // to FakeRuns::SetError when one is set.
  Result<std::vector<Tensor>> Run(const std::vector<Tensor>& inputs,
                                  const std::vector<std::string>& output_names) override;

 private:
  const FakeModel model_;
  const std::shared_ptr<FakeRuns> runs_;
};

class FakeEngine : public Engine {
 public:
  FakeEngine();

  // Files holding exactly `content` load as `model`; any other file loads
  // as FakeModel{}.
  void SetModel(const std::string& content, FakeModel model);
  FakeRuns& runs() { return *runs_; }
  int64_t loads() const;  // Load calls that returned a session

  // NotFound: no such file; PermissionDenied: outside `allowed_root`; the
  // model's load_error when it has one.
  Result<std::unique_ptr<Session>> Load(const std::filesystem::path& model_file,
                                        const std::filesystem::path& allowed_root,
                                        const SessionOptions& options) override;

 private:
  const std::shared_ptr<FakeRuns> runs_;
  mutable std::mutex mutex_;
  std::map<std::string, FakeModel> models_;  // by file content; guarded by mutex_
  int64_t loads_ = 0;                        // guarded by mutex_
};

}  // namespace perch
