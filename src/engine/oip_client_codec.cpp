#include "engine/oip_client_codec.h"

#include <fmt/format.h>
#include <simdjson.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <variant>

#include "tensor/half.h"

namespace perch {
namespace {

using nlohmann::json;
using simdjson::dom::element;
using simdjson::dom::element_type;

// A request and an answer go through here once each per inference: they
// are written and read directly (no JSON tree), which on a tiny model was a
// good part of what perch added in front of the server.

// `text` as a JSON string; invalid UTF-8 is replaced (U+FFFD) as nlohmann
// does, plain ASCII is copied as it is.
void AppendString(std::string& out, std::string_view text) {
  const bool plain = std::all_of(text.begin(), text.end(), [](char c) {
    return c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
  });
  if (!plain) {
    out += json(std::string(text)).dump(-1, ' ', false, json::error_handler_t::replace);
    return;
  }
  out += '"';
  out += text;
  out += '"';
}

// Floating-point values as nlohmann writes doubles: shortest round trip,
// ".0" on whole numbers, null for what JSON cannot say.
void AppendDouble(std::string& out, double value) {
  if (!std::isfinite(value)) {
    out += "null";
    return;
  }
  char text[32];
  const auto [end, error] = std::to_chars(text, text + sizeof(text), value);
  const std::string_view written(text, static_cast<size_t>(end - text));
  out += written;
  if (written.find_first_of(".e") == std::string_view::npos) {
    out += ".0";
  }
}

template <typename T>
void AppendInteger(std::string& out, T value) {
  char text[24];
  const auto [end, error] = std::to_chars(text, text + sizeof(text), value);
  out.append(text, static_cast<size_t>(end - text));
}

template <typename T>
void AppendNumbers(std::string& out, const Tensor& tensor, size_t count) {
  for (size_t i = 0; i < count; ++i) {
    if (i > 0) {
      out += ',';
    }
    if constexpr (std::is_floating_point_v<T>) {
      AppendDouble(out, static_cast<double>(ReadElement<T>(tensor.data, i)));
    } else {
      AppendInteger(out, ReadElement<T>(tensor.data, i));
    }
  }
}

Status AppendData(std::string& out, const Tensor& tensor) {
  PERCH_RETURN_IF_ERROR(ValidateTensorData(tensor));
  PERCH_ASSIGN_OR_RETURN(const int64_t elements, ElementCount(tensor.shape));
  const auto count = static_cast<size_t>(elements);
  out += '[';
  switch (tensor.datatype) {
    case DataType::kBool:
      for (size_t i = 0; i < count; ++i) {
        out += i > 0 ? "," : "";
        out += tensor.data[i] != 0 ? "true" : "false";
      }
      break;
    case DataType::kUint8:
      AppendNumbers<uint8_t>(out, tensor, count);
      break;
    case DataType::kUint16:
      AppendNumbers<uint16_t>(out, tensor, count);
      break;
    case DataType::kUint32:
      AppendNumbers<uint32_t>(out, tensor, count);
      break;
    case DataType::kUint64:
      AppendNumbers<uint64_t>(out, tensor, count);
      break;
    case DataType::kInt8:
      AppendNumbers<int8_t>(out, tensor, count);
      break;
    case DataType::kInt16:
      AppendNumbers<int16_t>(out, tensor, count);
      break;
    case DataType::kInt32:
      AppendNumbers<int32_t>(out, tensor, count);
      break;
    case DataType::kInt64:
      AppendNumbers<int64_t>(out, tensor, count);
      break;
    case DataType::kFp16:
    case DataType::kBf16:
      for (size_t i = 0; i < count; ++i) {
        out += i > 0 ? "," : "";
        const auto bits = ReadElement<uint16_t>(tensor.data, i);
        AppendDouble(
            out, tensor.datatype == DataType::kFp16 ? HalfToFloat(bits) : Bfloat16ToFloat(bits));
      }
      break;
    case DataType::kFp32:
      AppendNumbers<float>(out, tensor, count);
      break;
    case DataType::kFp64:
      AppendNumbers<double>(out, tensor, count);
      break;
    case DataType::kBytes: {
      PERCH_ASSIGN_OR_RETURN(const auto elements_view, SplitBytesElements(tensor.data, count));
      bool first = true;
      for (const auto element_bytes : elements_view) {
        out += first ? "" : ",";
        first = false;
        AppendString(out, element_bytes);
      }
      break;
    }
  }
  out += ']';
  return Status::Ok();
}

void AppendParameter(std::string& out, const InferParameterValue& value) {
  if (const auto* text = std::get_if<std::string>(&value)) {
    AppendString(out, *text);
  } else if (const auto* flag = std::get_if<bool>(&value)) {
    out += *flag ? "true" : "false";
  } else if (const auto* integer = std::get_if<int64_t>(&value)) {
    AppendInteger(out, *integer);
  } else {
    AppendDouble(out, std::get<double>(value));
  }
}

std::optional<double> NumberOf(const element& value) {
  switch (value.type()) {
    case element_type::DOUBLE:
      return double(value);
    case element_type::INT64:
      return static_cast<double>(int64_t(value));
    case element_type::UINT64:
      return static_cast<double>(uint64_t(value));
    default:
      return std::nullopt;
  }
}

// Appends `value` as a T, refusing what T cannot hold.
template <typename T>
bool AppendNumber(std::string& data, const element& value) {
  const element_type type = value.type();
  if constexpr (std::is_floating_point_v<T>) {
    const std::optional<double> number = NumberOf(value);
    if (!number) {
      return false;
    }
    AppendElement<T>(data, static_cast<T>(*number));
    return true;
  } else {
    if (type == element_type::UINT64) {
      const auto number = uint64_t(value);
      if (number > static_cast<uint64_t>(std::numeric_limits<T>::max())) {
        return false;
      }
      AppendElement<T>(data, static_cast<T>(number));
      return true;
    }
    if (type != element_type::INT64) {
      return false;
    }
    const auto number = int64_t(value);
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

bool AppendValue(DataType datatype, std::string& data, const element& value) {
  switch (datatype) {
    case DataType::kBool:
      if (value.type() != element_type::BOOL) {
        return false;
      }
      data.push_back(bool(value) ? '\1' : '\0');
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
    case DataType::kBf16: {
      const std::optional<double> number = NumberOf(value);
      if (!number) {
        return false;
      }
      const auto narrow = static_cast<float>(*number);
      AppendElement<uint16_t>(
          data, datatype == DataType::kFp16 ? FloatToHalf(narrow) : FloatToBfloat16(narrow));
      return true;
    }
    case DataType::kFp32:
      return AppendNumber<float>(data, value);
    case DataType::kFp64:
      return AppendNumber<double>(data, value);
    case DataType::kBytes:
      if (value.type() != element_type::STRING) {
        return false;
      }
      AppendBytesElement(data, std::string_view(value));
      return true;
  }
  return false;
}

// Flattens nested arrays, as the protocol allows "data" to be nested (the
// parser bounds the depth).
bool AppendAll(DataType datatype, std::string& data, const element& value) {
  if (value.type() == element_type::ARRAY) {
    for (const element item : simdjson::dom::array(value)) {
      if (!AppendAll(datatype, data, item)) {
        return false;
      }
    }
    return true;
  }
  return AppendValue(datatype, data, value);
}

std::string_view Dump(const element& value, std::string& text) {
  text = simdjson::minify(value);
  return text;
}

Result<Shape> AnswerShapeOf(const simdjson::dom::object& output, std::string_view name) {
  element value;
  if (output.at_key("shape").get(value) != simdjson::SUCCESS ||
      value.type() != element_type::ARRAY) {
    return BadGateway(fmt::format("output '{}' has no \"shape\" array", name));
  }
  Shape shape;
  for (const element dim : simdjson::dom::array(value)) {
    if (dim.type() != element_type::INT64 || int64_t(dim) < 0) {
      std::string text;
      return BadGateway(fmt::format("output '{}' has a shape of {}", name, Dump(value, text)));
    }
    shape.push_back(int64_t(dim));
  }
  return shape;
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
  // The keys in nlohmann's (sorted) order, as before: servers see the same bytes.
  std::string out = R"({"inputs":[)";
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& input = inputs[i];
    out += i > 0 ? R"(,{"data":)" : R"({"data":)";
    PERCH_RETURN_IF_ERROR(AppendData(out, input));
    out += R"(,"datatype":")";
    out += ToString(input.datatype);
    out += R"(","name":)";
    AppendString(out, input.name);
    out += R"(,"shape":[)";
    for (size_t d = 0; d < input.shape.size(); ++d) {
      out += d > 0 ? "," : "";
      AppendInteger(out, input.shape[d]);
    }
    out += "]}";
  }
  out += R"(],"outputs":[)";
  for (size_t i = 0; i < output_names.size(); ++i) {
    out += i > 0 ? R"(,{"name":)" : R"({"name":)";
    AppendString(out, output_names[i]);
    out += '}';
  }
  out += ']';
  if (!parameters.empty()) {
    out += R"(,"parameters":{)";
    bool first = true;
    for (const auto& [name, value] : parameters) {
      out += first ? "" : ",";
      first = false;
      AppendString(out, name);
      out += ':';
      AppendParameter(out, value);
    }
    out += '}';
  }
  out += '}';
  return out;
}

Result<std::vector<Tensor>> DecodeOipInferResponse(std::string_view body,
                                                   const std::vector<std::string>& output_names) {
  constexpr size_t kMaxDepth = 40;  // an answer object, its outputs, nested data
  simdjson::dom::parser parser;
  element root_value;
  element list_value;
  if (parser.allocate(std::max<size_t>(body.size(), 64), kMaxDepth) != simdjson::SUCCESS ||
      parser.parse(body.data(), body.size()).get(root_value) != simdjson::SUCCESS ||
      root_value.type() != element_type::OBJECT ||
      simdjson::dom::object(root_value).at_key("outputs").get(list_value) != simdjson::SUCCESS ||
      list_value.type() != element_type::ARRAY) {
    return BadGateway("the answer is not an inference response (no \"outputs\" array)");
  }
  const simdjson::dom::array list(list_value);
  std::vector<Tensor> outputs;
  outputs.reserve(output_names.size());
  for (const std::string& name : output_names) {
    std::optional<simdjson::dom::object> found;
    for (const element entry : list) {
      std::string_view entry_name;
      if (entry.type() == element_type::OBJECT &&
          simdjson::dom::object(entry).at_key("name").get(entry_name) == simdjson::SUCCESS &&
          entry_name == name) {
        found = simdjson::dom::object(entry);
        break;
      }
    }
    if (!found) {
      return BadGateway(fmt::format("the answer has no output '{}'", name));
    }
    // Messages name the output as "output 'NAME'" (formatted on errors only).
    Tensor tensor;
    tensor.name = name;
    std::string_view datatype_name;
    const auto datatype = found->at_key("datatype").get(datatype_name) == simdjson::SUCCESS
                              ? DataTypeFromString(datatype_name)
                              : std::nullopt;
    if (!datatype) {
      return BadGateway(fmt::format("output '{}' has no known \"datatype\"", name));
    }
    tensor.datatype = *datatype;
    PERCH_ASSIGN_OR_RETURN(tensor.shape, AnswerShapeOf(*found, name));
    element data;
    if (found->at_key("data").get(data) != simdjson::SUCCESS ||
        !AppendAll(tensor.datatype, tensor.data, data)) {
      return BadGateway(fmt::format("output '{}' has \"data\" that is not an array of {} values",
                                    name, ToString(tensor.datatype)));
    }
    const Status valid = ValidateTensorData(tensor);
    if (!valid.ok()) {
      return BadGateway(fmt::format("output '{}': {}", name, valid.message()));
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
