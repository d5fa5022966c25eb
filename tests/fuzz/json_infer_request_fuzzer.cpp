// The Open Inference Protocol JSON infer request and the binary tensor data
// extension (tensor/json_codec.h), as the REST and MQTT transports decode them.
// Input: the JSON, a NUL byte, then the binary data that follows the JSON
// header in a binary request.
#include <cstddef>
#include <cstdint>

#include "fuzz_input.h"
#include "tensor/json_codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input = perch::fuzz::AsText(data, size);
  const std::string_view json = perch::fuzz::TakeField(input, '\0');
  // The depth limit both transports pass.
  const auto decoded = perch::DecodeJsonInferRequest(json, input, 64);
  if (decoded.ok()) {
    // Whatever decodes must encode back as an answer does.
    perch::InferResponse response;
    response.outputs = decoded->request.inputs;
    (void)perch::EncodeJsonInferResponse(response, *decoded);
  }
  return 0;
}
