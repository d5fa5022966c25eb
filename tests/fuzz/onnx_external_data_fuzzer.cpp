// The ONNX external-data walker (engine/onnx_external_data.h), which reads a
// model's protobuf before ONNX Runtime may open anything it names.
#include <cstddef>
#include <cstdint>

#include "engine/onnx_external_data.h"
#include "fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)perch::ListOnnxExternalDataLocations(perch::fuzz::AsText(data, size));
  return 0;
}
