// The client side of the Open Inference Protocol's JSON encoding: what
// perch sends to a model's own server and reads back from it. Tensor data
// travels as JSON arrays (every server meets that; the binary extension is
// optional in the protocol).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "engine/engine.h"
#include "tensor/tensor.h"

namespace perch {

// The body of POST /v2/models/<name>/infer, with the request's `parameters`
// passed through. InvalidArgument when a tensor's data does not match its shape.
Result<std::string> EncodeOipInferRequest(const std::vector<Tensor>& inputs,
                                          const std::vector<std::string>& output_names,
                                          const InferParameters& parameters = {});

// The outputs of an infer answer, in the order `output_names` asks for.
// BadGateway naming what is wrong when `body` is not a valid answer or
// lacks an output.
Result<std::vector<Tensor>> DecodeOipInferResponse(std::string_view body,
                                                   const std::vector<std::string>& output_names);

// The signature in a GET /v2/models/<name> answer. BadGateway when `body` is
// not valid model metadata.
Result<ModelSignature> DecodeOipModelMetadata(std::string_view body);

}  // namespace perch
