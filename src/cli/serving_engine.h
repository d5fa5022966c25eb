// The engine `perch serve` and `perch batch` load models with: ONNX Runtime
// for ONNX models, the supervised process runtime for models whose
// model.json has a "runtime" (engine/process_engine.h).
#pragma once

#include <memory>

#include "core/log.h"
#include "core/status.h"
#include "engine/engine.h"

namespace perch::cli {

Result<std::unique_ptr<Engine>> CreateServingEngine(const OnnxEngineOptions& onnx, Logger logger);

}  // namespace perch::cli
