// The Open Inference Protocol gRPC infer request (api/grpc_codec.h) as the
// gRPC server decodes it: a serialized ModelInferRequest, its inputs, raw
// contents and request parameters (stream_id, timeout and the others).
#include <cstddef>
#include <cstdint>

#include "api/grpc_codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  inference::ModelInferRequest message;
  if (!message.ParseFromArray(data, static_cast<int>(size))) return 0;
  const auto decoded = perch::grpc_api::DecodeInferRequest(message);
  if (decoded.ok()) {
    // Whatever decodes must encode back as an answer does.
    perch::InferResponse response;
    response.outputs = decoded->request.inputs;
    inference::ModelInferResponse answer;
    perch::grpc_api::EncodeInferResponse(response, decoded->raw_outputs, answer);
  }
  return 0;
}
