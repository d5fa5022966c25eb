// Internal to pipeline/: a pipeline's model.json parsed into steps, and
// checked against its step models into an execution plan.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "engine/engine.h"
#include "pipeline/pipeline.h"
#include "pipeline/stream_table.h"
#include "tensor/tensor.h"

namespace perch::pipeline {

enum class Op {
  kModel,
  kCast,
  kScale,
  kReshape,
  kSlice,
  kConcat,
  kWindow,
  kState,
  kConstant,
  kSwitch
};

std::string_view ToString(Op op);
std::optional<Op> OpFromString(std::string_view name);

struct Step {
  std::string name;
  Op op = Op::kModel;
  // The pipeline tensors read and written, in order.
  std::vector<std::string> inputs;
  std::vector<std::string> outputs;
  // kModel: the model's own tensor names, parallel to inputs / outputs.
  std::string model;
  std::string version;  // "" = newest ready
  std::vector<std::string> model_inputs;
  std::vector<std::string> model_outputs;
  // Parameters of the built-in operations.
  DataType datatype = DataType::kFp32;  // kCast target; kState, kConstant type
  Shape shape;                          // kReshape target; kState, kConstant dims
  double scale = 1.0;
  double offset = 0.0;
  double fill = 0.0;       // kWindow, kState: the value before the first request
  double threshold = 0.5;  // kSwitch: the branch runs when any input >= this
  int64_t axis = 0;
  int64_t begin = 0;
  int64_t end = 0;
  int64_t frames = 0;             // kWindow: rows kept along dim 0
  std::string from;               // kState: the tensor carried to the next request
  Tensor constant;                // kConstant
  std::vector<std::string> then;  // kSwitch: steps that run only when it holds

  // Filled by Plan.
  std::vector<size_t> deps;    // steps whose outputs this one reads or whose switch gates it
  std::optional<size_t> gate;  // the switch that must hold for this step to run
  TensorSpec window_spec;      // kWindow: the shape of the window it keeps
};

struct PipelineSpec {
  std::vector<TensorSpec> inputs;
  std::vector<TensorSpec> outputs;
  std::vector<Step> steps;
  // The request parameter that names a request's stream ("streams":
  // {"parameter": ...}); read only when a step keeps state.
  std::string stream_parameter = "stream_id";
  bool stateful = false;  // a window or state step: set by Plan
  StreamLimits stream_limits;
};

// Parses a pipeline model.json. InvalidArgument naming the step and key.
Result<PipelineSpec> ParsePipeline(std::string_view model_json);

// Checks `spec` against the step models `steps` serves and orders it:
// every tensor produced once, no cycles, datatypes and shapes agreeing.
// Returns the steps in levels: each level's steps depend only on earlier
// levels, so they may run at once.
Result<std::vector<std::vector<size_t>>> Plan(PipelineSpec& spec, const StepModels& steps);

}  // namespace perch::pipeline
