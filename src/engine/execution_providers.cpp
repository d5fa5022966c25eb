#include "engine/execution_providers.h"

#include <fmt/format.h>

#include <algorithm>

namespace perch {

const std::vector<ExecutionProviderName>& KnownExecutionProviders() {
  static const std::vector<ExecutionProviderName> kKnown = {
      {"cpu", "CPUExecutionProvider"},           {"cuda", "CUDAExecutionProvider"},
      {"tensorrt", "TensorrtExecutionProvider"}, {"openvino", "OpenVINOExecutionProvider"},
      {"xnnpack", "XnnpackExecutionProvider"},
  };
  return kKnown;
}

bool IsKnownExecutionProvider(std::string_view name) {
  const auto& known = KnownExecutionProviders();
  return std::any_of(known.begin(), known.end(),
                     [&](const ExecutionProviderName& entry) { return entry.name == name; });
}

Result<ExecutionProviderPlan> PlanExecutionProviders(const std::vector<std::string>& requested,
                                                     const std::vector<std::string>& available) {
  ExecutionProviderPlan plan;
  const std::vector<std::string> wanted =
      requested.empty() ? std::vector<std::string>{"cpu"} : requested;
  for (const std::string& name : wanted) {
    const auto& known = KnownExecutionProviders();
    const auto entry = std::find_if(known.begin(), known.end(),
                                    [&](const ExecutionProviderName& e) { return e.name == name; });
    if (entry == known.end()) {
      std::vector<std::string_view> names;
      for (const auto& e : known) {
        names.push_back(e.name);
      }
      return InvalidArgument(fmt::format("execution provider \"{}\" is unknown; known: {}", name,
                                         fmt::join(names, ", ")));
    }
    if (std::find(plan.candidates.begin(), plan.candidates.end(), name) != plan.candidates.end()) {
      continue;
    }
    // ONNX Runtime always has its CPU provider, whatever the list says.
    const bool present = name == "cpu" || std::find(available.begin(), available.end(),
                                                    entry->onnxruntime_name) != available.end();
    if (!present) {
      plan.skipped.push_back(fmt::format("{}: not in this ONNX Runtime build (it has {})", name,
                                         fmt::join(available, ", ")));
      continue;
    }
    plan.candidates.push_back(name);
    if (name == "cpu") {
      break;  // nothing after the CPU is ever needed
    }
  }
  if (plan.candidates.empty()) {
    return Unavailable(fmt::format(
        "none of the execution providers asked for can run here ({}); add \"cpu\" to the list to "
        "fall back to the CPU",
        fmt::join(plan.skipped, "; ")));
  }
  return plan;
}

}  // namespace perch
