// model.json: the optional per-model settings of a model repository.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "engine/engine.h"
#include "engine/runtime_spec.h"

namespace perch {

struct VersionPolicy {
  enum class Kind { kLatest, kAll, kSpecific };
  Kind kind = Kind::kLatest;
  int64_t latest = 1;             // kLatest: how many of the newest versions
  std::vector<int64_t> specific;  // kSpecific: exactly these

  // The versions to serve out of `available` (ascending), ascending.
  std::vector<int64_t> Select(const std::vector<int64_t>& available) const;
};

std::string_view ToString(VersionPolicy::Kind kind);
std::optional<VersionPolicy::Kind> VersionPolicyKindFromString(std::string_view name);

// Narrows what the model declares: a datatype it must have, dims it must take.
struct TensorOverride {
  std::string name;
  std::optional<DataType> datatype;
  std::optional<Shape> dims;
};

// Merging concurrent requests along dim 0 into one engine run.
struct DynamicBatching {
  // Sizes worth dispatching at once, without waiting for more requests.
  std::vector<int64_t> preferred_batch_sizes;
  // How long the oldest request may wait for others to join its batch.
  int64_t max_queue_delay_us = 0;
  // Whether that wait applies while no instance of the model is running.
  // Off: a request that finds its model idle runs at once with whatever is
  // queued, and batches form from what arrives while a batch runs, so a
  // lone request pays nothing for batching. On (Triton's way): every batch
  // waits up to max_queue_delay_us for company, fuller batches at moderate
  // load for that delay on every request at low load.
  bool wait_when_idle = false;
};

// An event stream: every message on `input_topic` is a request to the model,
// every result is published to `output_topic`.
struct MqttBinding {
  std::string input_topic;   // an MQTT topic filter; wildcards allowed
  std::string output_topic;  // empty: <prefix>/<location>/<device>/results/<model>
};

struct ModelConfig {
  int64_t max_batch_size = 0;                       // > 0: dim 0 is the batch dim, at most this
  int instances = 1;                                // batches of this model that run at once
  int64_t max_queue_size = 64;                      // requests waiting beyond this are refused
  std::optional<DynamicBatching> dynamic_batching;  // needs max_batch_size > 0
  int threads = 0;  // > 0: a thread pool of its own; 0 = the shared pool
  VersionPolicy version_policy;
  std::vector<TensorOverride> inputs;
  std::vector<TensorOverride> outputs;
  int warmup_runs = 0;  // inferences on zero inputs before the model is ready
  // Shapes of the warm-up inputs by name; an input not named takes its
  // shape with dynamic dims as 1.
  std::map<std::string, Shape> warmup_shapes;
  std::optional<MqttBinding> mqtt;
  // "kind": "pipeline": the model chains other models (docs/pipelines.md).
  // Holds the whole model.json body, which src/pipeline reads; models/ only
  // checks the keys it knows.
  std::optional<std::string> pipeline;
  std::optional<RuntimeSpec> runtime;  // set: the model is a server of its own, not ONNX
  // ONNX Runtime execution providers in order of preference, e.g.
  // ["cuda", "cpu"]; empty: the CPU (engine/execution_providers.h).
  std::vector<std::string> execution_providers;
};

// Parses a model.json body. InvalidArgument naming the key for unknown keys,
// wrong types and out-of-range values.
Result<ModelConfig> ParseModelConfig(std::string_view json);

// The signature requests are checked against: the model's own with the
// overrides of `config` applied. InvalidArgument when an override names an
// unknown tensor or contradicts the model.
Result<ModelSignature> ApplyOverrides(const ModelSignature& model, const ModelConfig& config);

}  // namespace perch
