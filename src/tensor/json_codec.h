// The JSON encoding of the Open Inference Protocol (KServe v2 REST), with
// the binary tensor data extension as Triton defines it.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/status.h"
#include "tensor/tensor.h"

namespace perch {

// A decoded infer request, with the binary-output choices that only the
// JSON wire format carries.
struct JsonInferRequest {
  InferRequest request;
  // Outputs with an explicit "binary_data" parameter; it overrides the default.
  std::vector<std::pair<std::string, bool>> binary_choices;
  bool all_outputs_binary = false;  // request "binary_data_output": the default
  // Where an MQTT 3.1.1 client, which has no Response Topic, wants the answer.
  std::string reply_to;

  bool WantsBinary(std::string_view output_name) const;
};

// Decodes `json` (the whole body, or its first Inference-Header-Content-Length
// bytes) and takes tensor data for inputs marked "binary_data_size" from
// `binary`, in input order. The request's "parameters" but "timeout" and
// "binary_data_output" go to request.parameters, each a string, number or
// boolean within the limits of infer_parameters.h. Every error is InvalidArgument naming what was
// wrong; nesting deeper than `max_depth` is refused before any allocation
// proportional to it. `model_name` and `model_version` are left to the caller.
Result<JsonInferRequest> DecodeJsonInferRequest(std::string_view json, std::string_view binary,
                                                size_t max_depth);

struct EncodedInferResponse {
  std::string body;      // the JSON, then any binary output data
  size_t json_size = 0;  // the Inference-Header-Content-Length when has_binary
  bool has_binary = false;
};

// Encodes `response`; outputs that `request` wants in binary go after the JSON.
// InvalidArgument for a BYTES output that is not valid UTF-8 asked for as JSON.
Result<EncodedInferResponse> EncodeJsonInferResponse(const InferResponse& response,
                                                     const JsonInferRequest& request);

// `value` as a JSON string literal, quotes included.
std::string JsonQuote(std::string_view value);

}  // namespace perch
