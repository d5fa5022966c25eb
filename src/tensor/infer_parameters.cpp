#include "tensor/infer_parameters.h"

#include <fmt/format.h>

#include <cmath>

namespace perch {

bool IsTransportParameter(std::string_view name) {
  return name == "timeout" || name == "binary_data_output";
}

Status CheckInferParameterName(std::string_view name) {
  if (name.empty() || name.size() > kMaxInferParameterNameBytes) {
    return InvalidArgument(fmt::format("a parameter name must have 1 to {} bytes, not {}",
                                       kMaxInferParameterNameBytes, name.size()));
  }
  return Status::Ok();
}

Status AddInferParameter(InferParameters& parameters, std::string_view name,
                         InferParameterValue value) {
  PERCH_RETURN_IF_ERROR(CheckInferParameterName(name));
  if (parameters.size() >= kMaxInferParameters) {
    return InvalidArgument(
        fmt::format("a request may carry at most {} parameters; \"{}\" is one "
                    "too many",
                    kMaxInferParameters, name));
  }
  if (const auto* text = std::get_if<std::string>(&value);
      text != nullptr && text->size() > kMaxInferParameterStringBytes) {
    return InvalidArgument(fmt::format("parameter \"{}\" is a string of {} bytes; at most {} fit",
                                       name, text->size(), kMaxInferParameterStringBytes));
  }
  if (const auto* number = std::get_if<double>(&value);
      number != nullptr && !std::isfinite(*number)) {
    return InvalidArgument(fmt::format("parameter \"{}\" must be a finite number", name));
  }
  if (!parameters.emplace(std::string(name), std::move(value)).second) {
    return InvalidArgument(fmt::format("parameter \"{}\" is given twice", name));
  }
  return Status::Ok();
}

std::string_view InferParameterTypeName(const InferParameterValue& value) {
  if (std::holds_alternative<bool>(value)) {
    return "a boolean";
  }
  if (std::holds_alternative<int64_t>(value)) {
    return "an integer";
  }
  if (std::holds_alternative<double>(value)) {
    return "a number";
  }
  return "a string";
}

}  // namespace perch
