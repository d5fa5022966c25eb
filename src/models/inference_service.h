// InferenceService: the one transport-neutral entry point for inference.
// REST, gRPC and MQTT decode their wire format into an InferRequest, call
// Infer, and encode the InferResponse. Thread-safe.
#pragma once

#include "core/status.h"
#include "engine/engine.h"
#include "models/model_config.h"
#include "models/model_manager.h"
#include "models/scheduler.h"
#include "tensor/tensor.h"

namespace perch {

class InferenceService {
 public:
  InferenceService(const ModelManager& models, Scheduler& scheduler)
      : models_(models), scheduler_(scheduler) {}

  // Runs `request` on the version it names (or the newest ready one) and
  // waits for the answer. NotFound: unknown model or version; Unavailable:
  // not ready; InvalidArgument: inputs or requested outputs that do not fit
  // the model; ResourceExhausted: its queue is full; DeadlineExceeded: past
  // request.timeout.
  Result<InferResponse> Infer(InferRequest request) const;

  // Counts a request for a served model that its transport could not decode,
  // so the model's failure count includes malformed requests. Requests for
  // unknown models are not counted: their names would be unbounded labels.
  void RecordUndecodable(std::string_view model_name, std::string_view model_version) const;

  // Whether a request for this model and version, without a timeout, would
  // run at once on the calling thread and briefly (Scheduler::RunsAtOnce):
  // false for a version that is not loaded.
  bool RunsAtOnce(std::string_view model_name, std::string_view model_version) const;

 private:
  const ModelManager& models_;
  Scheduler& scheduler_;
};

// Checks `inputs` against `signature`: every input present once, none
// unknown, datatypes equal, ranks equal, fixed dims equal, the batch dim
// within `max_batch_size` (when > 0), and data sizes matching shapes.
Status ValidateInputs(const ModelSignature& signature, int64_t max_batch_size,
                      const std::vector<Tensor>& inputs);

// The outputs to compute: `requested` checked against `signature`, or every
// output in model order when `requested` is empty.
Result<std::vector<std::string>> ResolveOutputs(const ModelSignature& signature,
                                                const std::vector<std::string>& requested);

}  // namespace perch
