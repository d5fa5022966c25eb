// ONNX Runtime execution providers a model asks for in model.json
// ("execution_providers": ["cuda", "cpu"]) and which of them it gets: the
// first one in the list that this ONNX Runtime build carries and that
// starts on this device; each one passed over is reported with the reason,
// so that a model that meant to run on a GPU and runs on the CPU says why.
//
// Threading: stateless; safe from any thread.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace perch {

// perch's names of the providers it can ask ONNX Runtime for, with ONNX
// Runtime's own name of each ("cuda" -> "CUDAExecutionProvider").
struct ExecutionProviderName {
  std::string_view name;
  std::string_view onnxruntime_name;
};
const std::vector<ExecutionProviderName>& KnownExecutionProviders();
bool IsKnownExecutionProvider(std::string_view name);

// What to try, in order, and what was passed over before trying anything.
struct ExecutionProviderPlan {
  // Providers this ONNX Runtime build has, in the order asked; the CPU
  // provider ends the list when it was asked for (the engine falls back to
  // the next when one fails to start).
  std::vector<std::string> candidates;
  // "cuda: not in this ONNX Runtime build (it has CPUExecutionProvider)".
  std::vector<std::string> skipped;
};

// `requested`: perch names in order of preference (empty: ["cpu"]);
// `available`: ONNX Runtime's names of the providers of the build
// (Ort::GetAvailableProviders). Errors: InvalidArgument for an unknown
// name; Unavailable when no requested provider is in the build, naming
// each one and why.
Result<ExecutionProviderPlan> PlanExecutionProviders(const std::vector<std::string>& requested,
                                                     const std::vector<std::string>& available);

// The linked ONNX Runtime: its version ("1.30.0") and the execution
// providers it carries, by perch's names where perch has one ("cuda",
// "cpu") and ONNX Runtime's otherwise. For device facts.
std::string OnnxRuntimeVersion();
std::vector<std::string> AvailableExecutionProviders();

}  // namespace perch
