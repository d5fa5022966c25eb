// Internal to api/: the protobuf encoding of the Open Inference Protocol,
// converting between the generated gRPC messages and perch's own types.
#pragma once

#include <grpcpp/support/status.h>

#include "core/status.h"
#include "grpc_predict_v2.pb.h"
#include "tensor/tensor.h"

namespace perch::grpc_api {

// A decoded request, with the encoding its answer should use.
struct DecodedInfer {
  InferRequest request;
  // Raw in, raw out: a request that sent raw_input_contents is answered with
  // raw_output_contents, one that sent typed contents with typed contents
  // (FP16 and BF16 have no typed field, so an answer holding them is raw).
  bool raw_outputs = false;
};

// InvalidArgument naming the input for every malformed part: unknown
// datatypes, bad shapes, raw contents of the wrong size, typed contents of
// the wrong type or count, both raw and typed contents; a parameter without a
// value, past the limits of infer_parameters.h or a uint64 past int64. The
// parameters but "timeout" go to request.parameters.
Result<DecodedInfer> DecodeInferRequest(const inference::ModelInferRequest& message);

void EncodeInferResponse(const InferResponse& response, bool raw_outputs,
                         inference::ModelInferResponse& message);

// The one mapping of perch status codes to gRPC status codes.
grpc::Status ToGrpcStatus(const Status& status);

}  // namespace perch::grpc_api
