// Request parameters of the Open Inference Protocol: named values a request
// carries beside its tensors (REST `"parameters": {...}`, gRPC
// ModelInferRequest.parameters). perch reads some of them (a pipeline's
// stream, docs/pipelines.md); ONNX models ignore the rest, and process
// models receive them unchanged, as the protocol passes parameters through.
//
// The parameters a codec consumes for its own hop (`timeout`,
// `binary_data_output`) are never kept here: they describe how this request
// travels to perch, not what a model should do with it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <variant>

#include "core/status.h"

namespace perch {

// The value types the protocol allows: a string, a number, a boolean.
// Integers that fit in 64 bits are int64; other numbers are doubles.
using InferParameterValue = std::variant<bool, int64_t, double, std::string>;

using InferParameters = std::map<std::string, InferParameterValue, std::less<>>;

// Limits every decoder applies, so that a request cannot make perch keep
// (and pass on) unbounded parameters.
inline constexpr size_t kMaxInferParameters = 64;
inline constexpr size_t kMaxInferParameterNameBytes = 128;
inline constexpr size_t kMaxInferParameterStringBytes = 4096;

// Parameters a codec reads for its own hop and keeps out of InferParameters.
bool IsTransportParameter(std::string_view name);

// InvalidArgument when `name` is empty or longer than
// kMaxInferParameterNameBytes (the message does not repeat it).
Status CheckInferParameterName(std::string_view name);

// Adds `name` = `value` to `parameters`. InvalidArgument naming the parameter
// when it is already there, when `parameters` already holds
// kMaxInferParameters, when CheckInferParameterName refuses the name, a
// string value is longer than kMaxInferParameterStringBytes, or a number is
// not finite (JSON cannot carry it on).
Status AddInferParameter(InferParameters& parameters, std::string_view name,
                         InferParameterValue value);

// "a string", "an integer", "a number", "a boolean": for error messages.
std::string_view InferParameterTypeName(const InferParameterValue& value);

}  // namespace perch
