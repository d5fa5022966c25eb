#include "api/grpc_codec.h"

#include <fmt/format.h>

#include <cstring>
#include <limits>
#include <type_traits>

namespace perch::grpc_api {
namespace {

using inference::InferTensorContents;

// How many values of all the typed fields a contents message holds.
int TypedValueCount(const InferTensorContents& contents) {
  return contents.bool_contents_size() + contents.int_contents_size() +
         contents.int64_contents_size() + contents.uint_contents_size() +
         contents.uint64_contents_size() + contents.fp32_contents_size() +
         contents.fp64_contents_size() + contents.bytes_contents_size();
}

// Copies `values` (a repeated field) into `tensor.data` as T, range-checked.
template <typename T, typename Repeated>
Status CopyTyped(const Repeated& values, int64_t count, std::string_view field, Tensor& tensor) {
  if (values.size() != count) {
    return InvalidArgument(
        fmt::format("input '{}' has {} values in contents.{} but shape {} needs {}", tensor.name,
                    values.size(), field, ShapeToString(tensor.shape), count));
  }
  tensor.data.reserve(static_cast<size_t>(count) * sizeof(T));
  for (const auto value : values) {
    using Source = std::remove_cv_t<decltype(value)>;
    if constexpr (std::is_integral_v<T> && !std::is_same_v<T, Source>) {
      if (value < static_cast<Source>(std::numeric_limits<T>::min()) ||
          value > static_cast<Source>(std::numeric_limits<T>::max())) {
        return InvalidArgument(
            fmt::format("input '{}' has the value {} in contents.{}, out of "
                        "range for {}",
                        tensor.name, value, field, ToString(tensor.datatype)));
      }
    }
    AppendElement(tensor.data, static_cast<T>(value));
  }
  return Status::Ok();
}

Status DecodeTyped(const InferTensorContents& contents, int64_t count, Tensor& tensor) {
  if (tensor.datatype == DataType::kFp16 || tensor.datatype == DataType::kBf16) {
    return InvalidArgument(
        fmt::format("input '{}' is {}, which has no typed contents field: send "
                    "it in raw_input_contents",
                    tensor.name, ToString(tensor.datatype)));
  }
  const int expected_fields = [&] {
    switch (tensor.datatype) {
      case DataType::kBool:
        return contents.bool_contents_size();
      case DataType::kInt8:
      case DataType::kInt16:
      case DataType::kInt32:
        return contents.int_contents_size();
      case DataType::kInt64:
        return contents.int64_contents_size();
      case DataType::kUint8:
      case DataType::kUint16:
      case DataType::kUint32:
        return contents.uint_contents_size();
      case DataType::kUint64:
        return contents.uint64_contents_size();
      case DataType::kFp32:
        return contents.fp32_contents_size();
      case DataType::kFp64:
        return contents.fp64_contents_size();
      case DataType::kBytes:
        return contents.bytes_contents_size();
      case DataType::kFp16:
      case DataType::kBf16:
        return 0;
    }
    return 0;
  }();
  if (TypedValueCount(contents) != expected_fields) {
    return InvalidArgument(
        fmt::format("input '{}' is {} but its contents fill a field of another datatype",
                    tensor.name, ToString(tensor.datatype)));
  }
  switch (tensor.datatype) {
    case DataType::kBool:
      return CopyTyped<uint8_t>(contents.bool_contents(), count, "bool_contents", tensor);
    case DataType::kInt8:
      return CopyTyped<int8_t>(contents.int_contents(), count, "int_contents", tensor);
    case DataType::kInt16:
      return CopyTyped<int16_t>(contents.int_contents(), count, "int_contents", tensor);
    case DataType::kInt32:
      return CopyTyped<int32_t>(contents.int_contents(), count, "int_contents", tensor);
    case DataType::kInt64:
      return CopyTyped<int64_t>(contents.int64_contents(), count, "int64_contents", tensor);
    case DataType::kUint8:
      return CopyTyped<uint8_t>(contents.uint_contents(), count, "uint_contents", tensor);
    case DataType::kUint16:
      return CopyTyped<uint16_t>(contents.uint_contents(), count, "uint_contents", tensor);
    case DataType::kUint32:
      return CopyTyped<uint32_t>(contents.uint_contents(), count, "uint_contents", tensor);
    case DataType::kUint64:
      return CopyTyped<uint64_t>(contents.uint64_contents(), count, "uint64_contents", tensor);
    case DataType::kFp32:
      return CopyTyped<float>(contents.fp32_contents(), count, "fp32_contents", tensor);
    case DataType::kFp64:
      return CopyTyped<double>(contents.fp64_contents(), count, "fp64_contents", tensor);
    case DataType::kBytes:
      if (contents.bytes_contents_size() != count) {
        return InvalidArgument(fmt::format(
            "input '{}' has {} values in contents.bytes_contents but shape {} needs {}",
            tensor.name, contents.bytes_contents_size(), ShapeToString(tensor.shape), count));
      }
      for (const auto& element : contents.bytes_contents()) {
        AppendBytesElement(tensor.data, element);
      }
      return Status::Ok();
    case DataType::kFp16:
    case DataType::kBf16:
      break;  // refused above
  }
  return Internal("unhandled datatype");
}

Result<int64_t> Int64Parameter(
    const google::protobuf::Map<std::string, inference::InferParameter>& parameters,
    const std::string& key) {
  const auto it = parameters.find(key);
  if (it == parameters.end()) {
    return int64_t{0};
  }
  if (it->second.parameter_choice_case() != inference::InferParameter::kInt64Param ||
      it->second.int64_param() < 0) {
    return InvalidArgument(fmt::format("parameter \"{}\" must be a non-negative int64_param", key));
  }
  return it->second.int64_param();
}

// The request's own parameters, "timeout" (read above) left out.
Status DecodeParameters(
    const google::protobuf::Map<std::string, inference::InferParameter>& parameters,
    InferParameters& out) {
  for (const auto& [name, parameter] : parameters) {
    if (IsTransportParameter(name)) {
      continue;
    }
    PERCH_RETURN_IF_ERROR(CheckInferParameterName(name));
    InferParameterValue value;
    switch (parameter.parameter_choice_case()) {
      case inference::InferParameter::kBoolParam:
        value = parameter.bool_param();
        break;
      case inference::InferParameter::kInt64Param:
        value = parameter.int64_param();
        break;
      case inference::InferParameter::kStringParam:
        value = parameter.string_param();
        break;
      case inference::InferParameter::kDoubleParam:
        value = parameter.double_param();
        break;
      case inference::InferParameter::kUint64Param:
        if (parameter.uint64_param() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
          return InvalidArgument(fmt::format(
              "parameter \"{}\" is a uint64_param past 2^63-1; send it as a string_param", name));
        }
        value = static_cast<int64_t>(parameter.uint64_param());
        break;
      case inference::InferParameter::PARAMETER_CHOICE_NOT_SET:
        return InvalidArgument(fmt::format(
            "parameter \"{}\" has no value: set one of bool_param, int64_param, string_param, "
            "double_param, uint64_param",
            name));
    }
    PERCH_RETURN_IF_ERROR(AddInferParameter(out, name, std::move(value)));
  }
  return Status::Ok();
}

template <typename T, typename Repeated>
void FillTyped(const std::string& data, Repeated* values) {
  const size_t count = data.size() / sizeof(T);
  values->Reserve(static_cast<int>(count));
  for (size_t i = 0; i < count; ++i) {
    values->Add(ReadElement<T>(data, i));
  }
}

void EncodeTyped(const Tensor& tensor, InferTensorContents& contents) {
  switch (tensor.datatype) {
    case DataType::kBool:
      FillTyped<uint8_t>(tensor.data, contents.mutable_bool_contents());
      return;
    case DataType::kInt8:
      FillTyped<int8_t>(tensor.data, contents.mutable_int_contents());
      return;
    case DataType::kInt16:
      FillTyped<int16_t>(tensor.data, contents.mutable_int_contents());
      return;
    case DataType::kInt32:
      FillTyped<int32_t>(tensor.data, contents.mutable_int_contents());
      return;
    case DataType::kInt64:
      FillTyped<int64_t>(tensor.data, contents.mutable_int64_contents());
      return;
    case DataType::kUint8:
      FillTyped<uint8_t>(tensor.data, contents.mutable_uint_contents());
      return;
    case DataType::kUint16:
      FillTyped<uint16_t>(tensor.data, contents.mutable_uint_contents());
      return;
    case DataType::kUint32:
      FillTyped<uint32_t>(tensor.data, contents.mutable_uint_contents());
      return;
    case DataType::kUint64:
      FillTyped<uint64_t>(tensor.data, contents.mutable_uint64_contents());
      return;
    case DataType::kFp32:
      FillTyped<float>(tensor.data, contents.mutable_fp32_contents());
      return;
    case DataType::kFp64:
      FillTyped<double>(tensor.data, contents.mutable_fp64_contents());
      return;
    case DataType::kBytes: {
      const auto elements = SplitBytesElements(tensor.data, ElementCount(tensor.shape).value());
      for (const auto element : *elements) {
        contents.add_bytes_contents(std::string(element));
      }
      return;
    }
    case DataType::kFp16:
    case DataType::kBf16:
      return;  // never typed: the caller answers in raw
  }
}

}  // namespace

Result<DecodedInfer> DecodeInferRequest(const inference::ModelInferRequest& message) {
  DecodedInfer decoded;
  InferRequest& request = decoded.request;
  request.model_name = message.model_name();
  request.model_version = message.model_version();
  request.id = message.id();
  PERCH_ASSIGN_OR_RETURN(const int64_t timeout_us, Int64Parameter(message.parameters(), "timeout"));
  request.timeout = std::chrono::microseconds(timeout_us);
  PERCH_RETURN_IF_ERROR(DecodeParameters(message.parameters(), request.parameters));

  const bool raw = message.raw_input_contents_size() > 0;
  decoded.raw_outputs = raw;
  if (raw && message.raw_input_contents_size() != message.inputs_size()) {
    return InvalidArgument(
        fmt::format("the request has {} inputs but {} raw_input_contents; "
                    "give one per input, in input order",
                    message.inputs_size(), message.raw_input_contents_size()));
  }
  for (int i = 0; i < message.inputs_size(); ++i) {
    const auto& input = message.inputs(i);
    const auto datatype = DataTypeFromString(input.datatype());
    if (!datatype) {
      return InvalidArgument(
          fmt::format("input '{}' has unknown datatype \"{}\"", input.name(), input.datatype()));
    }
    Tensor tensor{.name = input.name(),
                  .datatype = *datatype,
                  .shape = Shape(input.shape().begin(), input.shape().end()),
                  .data = {}};
    const auto count = ElementCount(tensor.shape);
    if (!count.ok()) {
      return InvalidArgument(fmt::format("input '{}': {}", tensor.name, count.status().message()));
    }
    if (raw) {
      if (input.has_contents() && TypedValueCount(input.contents()) > 0) {
        return InvalidArgument(
            fmt::format("input '{}' has typed contents in a request that uses "
                        "raw_input_contents; use one or the other",
                        tensor.name));
      }
      tensor.data = message.raw_input_contents(i);
      PERCH_RETURN_IF_ERROR(ValidateTensorData(tensor));
    } else {
      PERCH_RETURN_IF_ERROR(DecodeTyped(input.contents(), *count, tensor));
    }
    request.inputs.push_back(std::move(tensor));
  }
  for (const auto& output : message.outputs()) {
    request.requested_outputs.push_back(output.name());
  }
  return decoded;
}

void EncodeInferResponse(const InferResponse& response, bool raw_outputs,
                         inference::ModelInferResponse& message) {
  message.set_model_name(response.model_name);
  message.set_model_version(response.model_version);
  message.set_id(response.id);
  if (!response.artifact_digest.empty()) {
    (*message.mutable_parameters())[std::string(kArtifactDigestParameter)].set_string_param(
        response.artifact_digest);
  }
  bool raw = raw_outputs;
  for (const Tensor& tensor : response.outputs) {
    raw = raw || tensor.datatype == DataType::kFp16 || tensor.datatype == DataType::kBf16;
  }
  for (const Tensor& tensor : response.outputs) {
    auto* output = message.add_outputs();
    output->set_name(tensor.name);
    output->set_datatype(std::string(ToString(tensor.datatype)));
    for (const int64_t dim : tensor.shape) {
      output->add_shape(dim);
    }
    if (raw) {
      message.add_raw_output_contents(tensor.data);
    } else {
      EncodeTyped(tensor, *output->mutable_contents());
    }
  }
}

grpc::Status ToGrpcStatus(const Status& status) {
  const auto code = [&] {
    switch (status.code()) {
      case StatusCode::kOk:
        return grpc::StatusCode::OK;
      case StatusCode::kInvalidArgument:
        return grpc::StatusCode::INVALID_ARGUMENT;
      case StatusCode::kNotFound:
        return grpc::StatusCode::NOT_FOUND;
      case StatusCode::kAlreadyExists:
        return grpc::StatusCode::ALREADY_EXISTS;
      case StatusCode::kUnavailable:
        return grpc::StatusCode::UNAVAILABLE;
      case StatusCode::kResourceExhausted:
        return grpc::StatusCode::RESOURCE_EXHAUSTED;
      case StatusCode::kDeadlineExceeded:
        return grpc::StatusCode::DEADLINE_EXCEEDED;
      case StatusCode::kCancelled:
        return grpc::StatusCode::CANCELLED;
      case StatusCode::kInternal:
        return grpc::StatusCode::INTERNAL;
      case StatusCode::kUnauthenticated:
        return grpc::StatusCode::UNAUTHENTICATED;
      case StatusCode::kPermissionDenied:
        return grpc::StatusCode::PERMISSION_DENIED;
      case StatusCode::kBadGateway:
        return grpc::StatusCode::UNAVAILABLE;
    }
    return grpc::StatusCode::UNKNOWN;
  }();
  return {code, status.message()};
}

}  // namespace perch::grpc_api
