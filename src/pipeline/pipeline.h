// Pipelines: a model whose model.json is of kind "pipeline" chains other
// models and built-in operations (cast, scale, reshape, slice, concat,
// per-stream window and state, switch), wired by tensor names. See
// docs/pipelines.md for the model.json format.
//
// A pipeline loads as a Session, so the ModelManager serves it like any
// model: metadata, readiness, REST, gRPC, MQTT, batch and hot reload come
// from the models component unchanged.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "core/log.h"
#include "core/metrics.h"
#include "core/status.h"
#include "engine/engine.h"
#include "models/model_manager.h"

namespace perch {

// The step models a pipeline runs: Acquire(name, version) as ModelManager
// answers it ("" for the newest ready version).
using StepModels = std::function<Result<std::shared_ptr<LoadedModel>>(std::string_view name,
                                                                      std::string_view version)>;

struct PipelineOptions {
  // What idle timeouts of streams are measured with; tests pass a fake.
  std::function<std::chrono::steady_clock::time_point()> now = std::chrono::steady_clock::now;
};

// Parses and checks the pipeline `model_json` (a model.json of kind
// "pipeline") of model `name` against the step models `steps` serves now:
// every step model ready, every tensor produced once, no cycles, names,
// datatypes and shapes agreeing. InvalidArgument or Unavailable naming the
// step otherwise. The Session it returns is thread-safe; requests of one
// stream run one at a time, in arrival order of the lock.
Result<std::unique_ptr<Session>> LoadPipeline(const std::string& name, std::string_view model_json,
                                              StepModels steps, MetricsRegistry& metrics,
                                              const PipelineOptions& options = {});

// The loader ModelManagerOptions::load_pipeline takes.
PipelineLoader MakePipelineLoader(MetricsRegistry& metrics, PipelineOptions options = {});

}  // namespace perch
