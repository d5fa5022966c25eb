#include "engine/oip_client_codec.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <variant>

#include "tensor/half.h"

namespace perch {
namespace {

using nlohmann::json;

template <typename T>
json NumbersOf(const Tensor& tensor, size_t count) {
  json values = json::array();
  for (size_t i = 0; i < count; ++i) {
    values.push_back(ReadElement<T>(tensor.data, i));
  }
  return values;
}

Result<json> DataOf(const Tensor& tensor) {
  PERCH_RETURN_IF_ERROR(ValidateTensorData(tensor));
  PERCH_ASSIGN_OR_RETURN(const int64_t elements, ElementCount(tensor.shape));
  const auto count = static_cast<size_t>(elements);
  switch (tensor.datatype) {
    case DataType::kBool: {
      json values = json::array();
      for (size_t i = 0; i < count; ++i) {
        values.push_back(tensor.data[i] != 0);
      }
      return values;
    }
    case DataType::kUint8:
      return NumbersOf<uint8_t>(tensor, count);
    case DataType::kUint16:
      return NumbersOf<uint16_t>(tensor, count);
    case DataType::kUint32:
      return NumbersOf<uint32_t>(tensor, count);
    case DataType::kUint64:
      return NumbersOf<uint64_t>(tensor, count);
    case DataType::kInt8:
      return NumbersOf<int8_t>(tensor, count);
    case DataType::kInt16:
      return NumbersOf<int16_t>(tensor, count);
    case DataType::kInt32:
      return NumbersOf<int32_t>(tensor, count);
    case DataType::kInt64:
      return NumbersOf<int64_t>(tensor, count);
    case DataType::kFp16:
    case DataType::kBf16: {
      json values = json::array();
      for (size_t i = 0; i < count; ++i) {
        const auto bits = ReadElement<uint16_t>(tensor.data, i);
        values.push_back(tensor.datatype == DataType::kFp16 ? HalfToFloat(bits)
                                                            : Bfloat16ToFloat(bits));
      }
      return values;
    }
    case DataType::kFp32:
      return NumbersOf<float>(tensor, count);
    case DataType::kFp64:
      return NumbersOf<double>(tensor, count);
    case DataType::kBytes: {
      PERCH_ASSIGN_OR_RETURN(const auto elements_view, SplitBytesElements(tensor.data, count));
      json values = json::array();
      for (const auto element : elements_view) {
        values.push_back(std::string(element));
      }
      return values;
    }
  }
  return InvalidArgument("unknown datatype");
}

// Appends `value` as a T, refusing what T cannot hold.
template <typename T>
bool AppendNumber(std::string& data, const json& value) {
  if constexpr (std::is_floating_point_v<T>) {
    if (!value.is_number()) {
      return false;
    }
    AppendElement<T>(data, value.get<T>());
    return true;
  } else {
    if (value.is_number_unsigned()) {
      const auto number = value.get<uint64_t>();
      if (number > static_cast<uint64_t>(std::numeric_limits<T>::max())) {
        return false;
      }
      AppendElement<T>(data, static_cast<T>(number));
      return true;
    }
    if (!value.is_number_integer()) {
      return false;
    }
    const auto number = value.get<int64_t>();
    if constexpr (std::is_unsigned_v<T>) {
      if (number < 0 || static_cast<uint64_t>(number) > std::numeric_limits<T>::max()) {
        return false;
      }
    } else {
      if (number < std::numeric_limits<T>::min() || number > std::numeric_limits<T>::max()) {
        return false;
      }
    }
    AppendElement<T>(data, static_cast<T>(number));
    return true;
  }
}

bool AppendValue(DataType datatype, std::string& data, const json& value) {
  switch (datatype) {
    case DataType::kBool:
      if (!value.is_boolean()) {
        return false;
      }
      data.push_back(value.get<bool>() ? '\1' : '\0');
      return true;
    case DataType::kUint8:
      return AppendNumber<uint8_t>(data, value);
    case DataType::kUint16:
      return AppendNumber<uint16_t>(data, value);
    case DataType::kUint32:
      return AppendNumber<uint32_t>(data, value);
    case DataType::kUint64:
      return AppendNumber<uint64_t>(data, value);
    case DataType::kInt8:
      return AppendNumber<int8_t>(data, value);
    case DataType::kInt16:
      return AppendNumber<int16_t>(data, value);
    case DataType::kInt32:
      return AppendNumber<int32_t>(data, value);
    case DataType::kInt64:
      return AppendNumber<int64_t>(data, value);
    case DataType::kFp16:
    case DataType::kBf16:
      if (!value.is_number()) {
        return false;
      }
      AppendElement<uint16_t>(data, datatype == DataType::kFp16
                                        ? FloatToHalf(value.get<float>())
                                        : FloatToBfloat16(value.get<float>()));
      return true;
    case DataType::kFp32:
      return AppendNumber<float>(data, value);
    case DataType::kFp64:
      return AppendNumber<double>(data, value);
    case DataType::kBytes:
      if (!value.is_string()) {
        return false;
      }
      AppendBytesElement(data, value.get<std::string>());
      return true;
  }
  return false;
}

// Flattens nested arrays, as the protocol allows "data" to be nested.
bool AppendAll(DataType datatype, std::string& data, const json& value, int depth) {
  if (value.is_array()) {
    if (depth > 32) {
      return false;
    }
    return std::all_of(value.begin(), value.end(), [&](const json& item) {
      return AppendAll(datatype, data, item, depth + 1);
    });
  }
  return AppendValue(datatype, data, value);
}

Result<Shape> ShapeOf(const json& value, bool allow_dynamic, const std::string& where) {
  if (!value.is_array()) {
    return BadGateway(fmt::format("{} has no \"shape\" array", where));
  }
  Shape shape;
  for (const json& dim : value) {
    if (!dim.is_number_integer() || dim.get<int64_t>() < (allow_dynamic ? -1 : 0)) {
      return BadGateway(fmt::format("{} has a shape of {}", where, value.dump()));
    }
    shape.push_back(dim.get<int64_t>());
  }
  return shape;
}

Result<DataType> DatatypeOf(const json& tensor, const std::string& where) {
  const auto datatype = tensor.contains("datatype") && tensor["datatype"].is_string()
                            ? DataTypeFromString(tensor["datatype"].get<std::string>())
                            : std::nullopt;
  if (!datatype) {
    return BadGateway(fmt::format("{} has no known \"datatype\"", where));
  }
  return *datatype;
}

Result<std::vector<TensorSpec>> SpecsOf(const json& root, const char* key) {
  if (!root.contains(key) || !root[key].is_array()) {
    return BadGateway(fmt::format("the model metadata has no \"{}\" array", key));
  }
  std::vector<TensorSpec> specs;
  for (const json& entry : root[key]) {
    if (!entry.is_object() || !entry.contains("name") || !entry["name"].is_string()) {
      return BadGateway(fmt::format("an entry of \"{}\" in the model metadata has no name", key));
    }
    TensorSpec spec;
    spec.name = entry["name"].get<std::string>();
    const std::string where = fmt::format("metadata {} '{}'", key, spec.name);
    PERCH_ASSIGN_OR_RETURN(spec.datatype, DatatypeOf(entry, where));
    PERCH_ASSIGN_OR_RETURN(spec.shape, ShapeOf(entry.value("shape", json()), true, where));
    specs.push_back(std::move(spec));
  }
  return specs;
}

}  // namespace

Result<std::string> EncodeOipInferRequest(const std::vector<Tensor>& inputs,
                                          const std::vector<std::string>& output_names,
                                          const InferParameters& parameters) {
  json body = {{"inputs", json::array()}, {"outputs", json::array()}};
  if (!parameters.empty()) {
    json& out = body["parameters"];
    for (const auto& [name, value] : parameters) {
      json& slot = out[name];
      std::visit([&slot](const auto& v) { slot = v; }, value);
    }
  }
  for (const Tensor& input : inputs) {
    PERCH_ASSIGN_OR_RETURN(json data, DataOf(input));
    body["inputs"].push_back({{"name", input.name},
                              {"datatype", ToString(input.datatype)},
                              {"shape", input.shape},
                              {"data", std::move(data)}});
  }
  for (const std::string& name : output_names) {
    body["outputs"].push_back({{"name", name}});
  }
  return body.dump(-1, ' ', false, json::error_handler_t::replace);
}

Result<std::vector<Tensor>> DecodeOipInferResponse(std::string_view body,
                                                   const std::vector<std::string>& output_names) {
  const json root = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object() || !root.contains("outputs") ||
      !root["outputs"].is_array()) {
    return BadGateway("the answer is not an inference response (no \"outputs\" array)");
  }
  std::vector<Tensor> outputs;
  for (const std::string& name : output_names) {
    const auto& list = root["outputs"];
    const auto found = std::find_if(list.begin(), list.end(), [&](const json& entry) {
      return entry.is_object() && entry.value("name", json()) == name;
    });
    if (found == list.end()) {
      return BadGateway(fmt::format("the answer has no output '{}'", name));
    }
    const std::string where = fmt::format("output '{}'", name);
    Tensor tensor;
    tensor.name = name;
    PERCH_ASSIGN_OR_RETURN(tensor.datatype, DatatypeOf(*found, where));
    PERCH_ASSIGN_OR_RETURN(tensor.shape, ShapeOf(found->value("shape", json()), false, where));
    if (!found->contains("data") || !AppendAll(tensor.datatype, tensor.data, (*found)["data"], 0)) {
      return BadGateway(fmt::format("{} has \"data\" that is not an array of {} values", where,
                                    ToString(tensor.datatype)));
    }
    const Status valid = ValidateTensorData(tensor);
    if (!valid.ok()) {
      return BadGateway(fmt::format("{}: {}", where, valid.message()));
    }
    outputs.push_back(std::move(tensor));
  }
  return outputs;
}

Result<ModelSignature> DecodeOipModelMetadata(std::string_view body) {
  const json root = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) {
    return BadGateway("the model metadata is not a JSON object");
  }
  ModelSignature signature;
  PERCH_ASSIGN_OR_RETURN(signature.inputs, SpecsOf(root, "inputs"));
  PERCH_ASSIGN_OR_RETURN(signature.outputs, SpecsOf(root, "outputs"));
  if (signature.outputs.empty()) {
    return BadGateway("the model metadata lists no outputs");
  }
  return signature;
}

}  // namespace perch
