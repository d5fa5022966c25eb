// Models that are not ONNX: each version is a server of its own (model.json
// `runtime`, see runtime_spec.h) which the process engine starts under a
// ProcessSupervisor and calls over the Open Inference Protocol. Its
// Sessions look to the rest of perch exactly like ONNX ones.
#pragma once

#include <filesystem>
#include <memory>

#include "core/log.h"
#include "core/status.h"
#include "engine/engine.h"

namespace perch {

struct ProcessEngineOptions {
  // bubblewrap; empty: looked up in /usr/bin and /bin. Not found: models
  // that ask for the sandbox fail to load, saying so.
  std::filesystem::path bwrap;
};

// Loads versions whose SessionOptions carry a runtime: `model_file` is the
// version folder. InvalidArgument for a version without one.
std::unique_ptr<Engine> CreateProcessEngine(ProcessEngineOptions options, Logger logger);

// Sends versions with a runtime to `process`, every other one to `onnx`.
std::unique_ptr<Engine> CreateRuntimeDispatchEngine(std::unique_ptr<Engine> onnx,
                                                    std::unique_ptr<Engine> process);

}  // namespace perch
