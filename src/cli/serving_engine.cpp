#include "cli/serving_engine.h"

#include "engine/process_engine.h"

namespace perch::cli {

Result<std::unique_ptr<Engine>> CreateServingEngine(const OnnxEngineOptions& onnx, Logger logger) {
  PERCH_ASSIGN_OR_RETURN(auto onnx_engine, CreateOnnxEngine(onnx, logger));
  return CreateRuntimeDispatchEngine(std::move(onnx_engine),
                                     CreateProcessEngine(ProcessEngineOptions{}, logger));
}

}  // namespace perch::cli
