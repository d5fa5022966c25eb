// Inference engines behind one interface. An Engine loads model files into
// Sessions; a Session runs inference. ONNX Runtime is the first engine.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/log.h"
#include "core/status.h"
#include "engine/runtime_spec.h"
#include "tensor/tensor.h"

namespace perch {

// One input or output as the model declares it; -1 marks a dynamic dim.
struct TensorSpec {
  std::string name;
  DataType datatype = DataType::kFp32;
  Shape shape;
};

struct ModelSignature {
  std::vector<TensorSpec> inputs;
  std::vector<TensorSpec> outputs;
};

struct SessionOptions {
  // Intra-op threads for this model alone; 0 shares the engine's pool, which
  // is what keeps hundreds of small models cheap.
  int intra_op_threads = 0;
  // Set for a model that is a server of its own (model.json "runtime"):
  // the model file is then its version folder. See process_engine.h.
  std::optional<RuntimeSpec> runtime{};
  std::string model_name{};  // the model's name and version, for its server and logs
  int64_t model_version = 0;
  // model.json's "execution_providers" in order of preference (empty: the
  // CPU); see engine/execution_providers.h.
  std::vector<std::string> execution_providers;
};

// What a request brings to a run besides its tensors.
struct RunContext {
  // Until when the request is wanted; none: no deadline of its own.
  std::optional<std::chrono::steady_clock::time_point> deadline{};
  // The request's parameters (OIP): a pipeline reads its stream from them,
  // a process model's server receives them.
  InferParameters parameters{};
};

// A loaded model. Run is thread-safe: concurrent requests may share one Session.
class Session {
 public:
  virtual ~Session() = default;

  virtual const ModelSignature& Signature() const = 0;

  // Runs the model. `inputs` are matched by name and must already agree with
  // Signature() (the caller validates); `output_names` lists the outputs to
  // compute, in the order they are returned. Errors: InvalidArgument when the
  // runtime refuses the values, Internal otherwise.
  virtual Result<std::vector<Tensor>> Run(const std::vector<Tensor>& inputs,
                                          const std::vector<std::string>& output_names) = 0;

  // True for a session whose Run mostly waits for another process (a
  // process model's server) instead of computing: the scheduler may run it
  // on the requesting thread, sparing two thread hand-offs.
  virtual bool WaitsOnAnotherProcess() const { return false; }

  // Run for one request (or a batch of requests with equal parameters),
  // with what it brings besides tensors: see RunContext. A session that
  // waits on something outside perch (a process model's server restarting)
  // waits no longer than the deadline and answers DeadlineExceeded then; one
  // that computes in perch ignores it. ONNX models ignore the parameters.
  virtual Result<std::vector<Tensor>> RunWithContext(const std::vector<Tensor>& inputs,
                                                     const std::vector<std::string>& output_names,
                                                     const RunContext& context) {
    (void)context;
    return Run(inputs, output_names);
  }
};

// Loads models. Thread-safe.
class Engine {
 public:
  virtual ~Engine() = default;

  // Loads `model_file`. Nothing outside `allowed_root` is ever opened: the
  // file itself (after resolving links) and any external data it names must
  // lie inside. Errors: NotFound, PermissionDenied (outside the root),
  // InvalidArgument (not a model this engine can run).
  virtual Result<std::unique_ptr<Session>> Load(const std::filesystem::path& model_file,
                                                const std::filesystem::path& allowed_root,
                                                const SessionOptions& options) = 0;
};

struct OnnxEngineOptions {
  int intra_op_threads = 0;  // the shared pool's size; 0 = one per core
  int inter_op_threads = 1;
};

// ONNX Runtime on the CPU, one environment and one thread pool shared by all
// sessions that do not ask for their own. The environment is made by the
// first load (an agent with no model does not hold it); a failure to make it
// fails that load.
Result<std::unique_ptr<Engine>> CreateOnnxEngine(const OnnxEngineOptions& options, Logger logger);

}  // namespace perch
