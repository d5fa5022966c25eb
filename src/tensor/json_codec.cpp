#include "tensor/json_codec.h"

#include <fmt/format.h>
#include <simdjson.h>

#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <type_traits>

#include "tensor/half.h"

namespace perch {
namespace {

static_assert(std::endian::native == std::endian::little,
              "tensor data is little-endian on the wire and in memory");

using simdjson::dom::element;
using simdjson::dom::element_type;

std::string_view JsonTypeName(element_type type) {
  switch (type) {
    case element_type::ARRAY:
      return "an array";
    case element_type::OBJECT:
      return "an object";
    case element_type::INT64:
    case element_type::UINT64:
      return "an integer";
    case element_type::DOUBLE:
      return "a number with a fraction or exponent";
    case element_type::STRING:
      return "a string";
    case element_type::BOOL:
      return "a boolean";
    case element_type::NULL_VALUE:
      return "null";
  }
  return "an unknown value";
}

// Appends one JSON element of `tensor_name` to `out` as `datatype`.
class ElementWriter {
 public:
  ElementWriter(const std::string& tensor_name, DataType datatype, std::string& out)
      : tensor_name_(tensor_name), datatype_(datatype), out_(out) {}

  Status Append(const element& value) {
    switch (datatype_) {
      case DataType::kBool:
        return AppendBool(value);
      case DataType::kUint8:
        return AppendInteger<uint8_t>(value);
      case DataType::kUint16:
        return AppendInteger<uint16_t>(value);
      case DataType::kUint32:
        return AppendInteger<uint32_t>(value);
      case DataType::kUint64:
        return AppendInteger<uint64_t>(value);
      case DataType::kInt8:
        return AppendInteger<int8_t>(value);
      case DataType::kInt16:
        return AppendInteger<int16_t>(value);
      case DataType::kInt32:
        return AppendInteger<int32_t>(value);
      case DataType::kInt64:
        return AppendInteger<int64_t>(value);
      case DataType::kFp16:
        return AppendFloat(value, 65504.0, [this](double v) {
          AppendElement(out_, FloatToHalf(static_cast<float>(v)));
        });
      case DataType::kBf16:
        return AppendFloat(value, std::numeric_limits<float>::max(), [this](double v) {
          AppendElement(out_, FloatToBfloat16(static_cast<float>(v)));
        });
      case DataType::kFp32:
        return AppendFloat(value, std::numeric_limits<float>::max(),
                           [this](double v) { AppendElement(out_, static_cast<float>(v)); });
      case DataType::kFp64:
        return AppendFloat(value, std::numeric_limits<double>::max(),
                           [this](double v) { AppendElement(out_, v); });
      case DataType::kBytes:
        return AppendString(value);
    }
    return Internal("unhandled datatype");
  }

 private:
  Status WrongType(const element& value, std::string_view expected) const {
    return InvalidArgument(fmt::format("input '{}' ({}) has {} in its data where {} is expected",
                                       tensor_name_, ToString(datatype_),
                                       JsonTypeName(value.type()), expected));
  }

  Status OutOfRange(std::string_view value_text) const {
    return InvalidArgument(
        fmt::format("input '{}' has the value {} in its data, out of range for {}", tensor_name_,
                    value_text, ToString(datatype_)));
  }

  Status AppendBool(const element& value) {
    if (value.type() != element_type::BOOL) {
      return WrongType(value, "true or false");
    }
    out_.push_back(bool(value) ? 1 : 0);
    return Status::Ok();
  }

  template <typename T>
  Status AppendInteger(const element& value) {
    if (value.type() == element_type::INT64) {
      const int64_t v = int64_t(value);
      if (std::is_unsigned_v<T> ? v < 0 || static_cast<uint64_t>(v) > std::numeric_limits<T>::max()
                                : v < static_cast<int64_t>(std::numeric_limits<T>::min()) ||
                                      v > static_cast<int64_t>(std::numeric_limits<T>::max())) {
        return OutOfRange(std::to_string(v));
      }
      AppendElement(out_, static_cast<T>(v));
      return Status::Ok();
    }
    if (value.type() == element_type::UINT64) {  // only values above INT64_MAX land here
      const uint64_t v = uint64_t(value);
      if (!std::is_same_v<T, uint64_t>) {
        return OutOfRange(std::to_string(v));
      }
      AppendElement(out_, static_cast<T>(v));
      return Status::Ok();
    }
    return WrongType(value, "an integer");
  }

  template <typename Store>
  Status AppendFloat(const element& value, double max_magnitude, Store store) {
    double v = 0;
    switch (value.type()) {
      case element_type::INT64:
        v = static_cast<double>(int64_t(value));
        break;
      case element_type::UINT64:
        v = static_cast<double>(uint64_t(value));
        break;
      case element_type::DOUBLE:
        v = double(value);
        break;
      default:
        return WrongType(value, "a number");
    }
    if (std::fabs(v) > max_magnitude) {
      return OutOfRange(fmt::format("{}", v));
    }
    store(v);
    return Status::Ok();
  }

  Status AppendString(const element& value) {
    if (value.type() != element_type::STRING) {
      return WrongType(value, "a string");
    }
    AppendBytesElement(out_, std::string_view(value));
    return Status::Ok();
  }

  const std::string& tensor_name_;
  DataType datatype_;
  std::string& out_;
};

// Flattens (possibly nested) `data` row-major into `writer`, counting elements.
Status AppendData(const element& data, ElementWriter& writer, int64_t& count) {
  if (data.type() != element_type::ARRAY) {
    ++count;
    return writer.Append(data);
  }
  for (const element child : simdjson::dom::array(data)) {
    PERCH_RETURN_IF_ERROR(AppendData(child, writer, count));
  }
  return Status::Ok();
}

Result<std::string_view> GetString(const simdjson::dom::object& object, std::string_view key,
                                   std::string_view where) {
  element value;
  if (object.at_key(key).get(value) != simdjson::SUCCESS) {
    return InvalidArgument(fmt::format("{} has no \"{}\"", where, key));
  }
  if (value.type() != element_type::STRING) {
    return InvalidArgument(fmt::format("\"{}\" of {} must be a string, not {}", key, where,
                                       JsonTypeName(value.type())));
  }
  return std::string_view(value);
}

// An absent key gives nullopt: a default-constructed dom::object is not a
// usable empty object.
Result<std::optional<simdjson::dom::object>> GetOptionalObject(const simdjson::dom::object& object,
                                                               std::string_view key,
                                                               std::string_view where) {
  element value;
  if (object.at_key(key).get(value) != simdjson::SUCCESS) {
    return std::optional<simdjson::dom::object>();
  }
  if (value.type() != element_type::OBJECT) {
    return InvalidArgument(fmt::format("\"{}\" of {} must be an object, not {}", key, where,
                                       JsonTypeName(value.type())));
  }
  return std::optional(simdjson::dom::object(value));
}

// An optional member of an optional object.
bool FindKey(const std::optional<simdjson::dom::object>& object, std::string_view key,
             element& value) {
  return object && object->at_key(key).get(value) == simdjson::SUCCESS;
}

// Reads an optional boolean parameter; absent means false.
Result<bool> GetBoolParameter(const std::optional<simdjson::dom::object>& parameters,
                              std::string_view key, std::string_view where) {
  element value;
  if (!FindKey(parameters, key, value)) {
    return false;
  }
  if (value.type() != element_type::BOOL) {
    return InvalidArgument(fmt::format("parameter \"{}\" of {} must be true or false", key, where));
  }
  return bool(value);
}

// The request's own parameters, those the codec reads for this hop left out.
Status DecodeParameters(const std::optional<simdjson::dom::object>& parameters,
                        InferParameters& out) {
  if (!parameters) {
    return Status::Ok();
  }
  for (const auto field : *parameters) {
    if (IsTransportParameter(field.key)) {
      continue;
    }
    PERCH_RETURN_IF_ERROR(CheckInferParameterName(field.key));
    InferParameterValue value;
    switch (field.value.type()) {
      case element_type::STRING:
        value = std::string(std::string_view(field.value));
        break;
      case element_type::INT64:
        value = int64_t(field.value);
        break;
      case element_type::DOUBLE:
        value = double(field.value);
        break;
      case element_type::BOOL:
        value = bool(field.value);
        break;
      case element_type::UINT64:
        return InvalidArgument(fmt::format(
            "parameter \"{}\" is an integer past 2^63-1; send it as a string", field.key));
      default:
        return InvalidArgument(fmt::format(
            "parameter \"{}\" is {}; a parameter's value must be a string, a number or a boolean",
            field.key, JsonTypeName(field.value.type())));
    }
    PERCH_RETURN_IF_ERROR(AddInferParameter(out, field.key, std::move(value)));
  }
  return Status::Ok();
}

Result<Shape> DecodeShape(const simdjson::dom::object& input, const std::string& where) {
  element shape_value;
  if (input.at_key("shape").get(shape_value) != simdjson::SUCCESS) {
    return InvalidArgument(fmt::format("{} has no \"shape\"", where));
  }
  if (shape_value.type() != element_type::ARRAY) {
    return InvalidArgument(fmt::format("\"shape\" of {} must be an array of integers", where));
  }
  Shape shape;
  for (const element dim : simdjson::dom::array(shape_value)) {
    if (dim.type() != element_type::INT64) {
      return InvalidArgument(fmt::format(
          "\"shape\" of {} must hold integers that fit in 64 bits, not {}", where,
          dim.type() == element_type::UINT64 ? "an integer past 2^63" : JsonTypeName(dim.type())));
    }
    shape.push_back(int64_t(dim));
  }
  return shape;
}

Result<Tensor> DecodeInput(const element& input_value, size_t index, std::string_view& binary) {
  if (input_value.type() != element_type::OBJECT) {
    return InvalidArgument(fmt::format("inputs[{}] must be an object", index));
  }
  const simdjson::dom::object input(input_value);
  const std::string index_where = fmt::format("inputs[{}]", index);
  PERCH_ASSIGN_OR_RETURN(const std::string_view name, GetString(input, "name", index_where));
  const std::string where = fmt::format("input '{}'", name);
  PERCH_ASSIGN_OR_RETURN(const std::string_view datatype_name, GetString(input, "datatype", where));
  const auto datatype = DataTypeFromString(datatype_name);
  if (!datatype) {
    return InvalidArgument(fmt::format(
        "input '{}' has unknown datatype \"{}\"; expected one of BOOL, UINT8, UINT16, UINT32, "
        "UINT64, INT8, INT16, INT32, INT64, FP16, BF16, FP32, FP64, BYTES",
        name, datatype_name));
  }
  Tensor tensor{.name = std::string(name), .datatype = *datatype, .shape = {}, .data = {}};
  PERCH_ASSIGN_OR_RETURN(tensor.shape, DecodeShape(input, where));
  const auto element_count = ElementCount(tensor.shape);
  if (!element_count.ok()) {
    return InvalidArgument(fmt::format("{}: {}", where, element_count.status().message()));
  }
  const int64_t count = *element_count;

  PERCH_ASSIGN_OR_RETURN(const auto parameters, GetOptionalObject(input, "parameters", where));
  element binary_size_value;
  if (FindKey(parameters, "binary_data_size", binary_size_value)) {
    if (binary_size_value.type() != element_type::INT64 || int64_t(binary_size_value) < 0) {
      return InvalidArgument(
          fmt::format("\"binary_data_size\" of {} must be a non-negative integer", where));
    }
    const auto size = static_cast<uint64_t>(int64_t(binary_size_value));
    if (size > binary.size()) {
      return InvalidArgument(fmt::format(
          "{} says binary_data_size {} but only {} bytes of binary data remain in the body", where,
          size, binary.size()));
    }
    tensor.data.assign(binary.substr(0, size));
    binary.remove_prefix(size);
    PERCH_RETURN_IF_ERROR(ValidateTensorData(tensor));
    return tensor;
  }

  element data;
  if (input.at_key("data").get(data) != simdjson::SUCCESS) {
    return InvalidArgument(
        fmt::format("{} has neither \"data\" nor a \"binary_data_size\" parameter", where));
  }
  if (tensor.datatype != DataType::kBytes) {
    // Never trust the shape for the reservation: the data decides the size.
    const auto bound = static_cast<uint64_t>(count);
    tensor.data.reserve(std::min<uint64_t>(bound, 1 << 20) * ElementSize(tensor.datatype));
  }
  int64_t seen = 0;
  ElementWriter writer(tensor.name, tensor.datatype, tensor.data);
  PERCH_RETURN_IF_ERROR(AppendData(data, writer, seen));
  if (seen != count) {
    return InvalidArgument(fmt::format("input '{}' has {} data elements but shape {} needs {}",
                                       name, seen, ShapeToString(tensor.shape), count));
  }
  return tensor;
}

Status DecodeOutputs(const simdjson::dom::object& root, JsonInferRequest& decoded) {
  element outputs_value;
  if (root.at_key("outputs").get(outputs_value) != simdjson::SUCCESS) {
    return Status::Ok();
  }
  if (outputs_value.type() != element_type::ARRAY) {
    return InvalidArgument("\"outputs\" must be an array of objects");
  }
  size_t index = 0;
  for (const element output_value : simdjson::dom::array(outputs_value)) {
    const std::string index_where = fmt::format("outputs[{}]", index++);
    if (output_value.type() != element_type::OBJECT) {
      return InvalidArgument(fmt::format("{} must be an object", index_where));
    }
    const simdjson::dom::object output(output_value);
    PERCH_ASSIGN_OR_RETURN(const std::string_view name, GetString(output, "name", index_where));
    const std::string where = fmt::format("output '{}'", name);
    PERCH_ASSIGN_OR_RETURN(const auto parameters, GetOptionalObject(output, "parameters", where));
    decoded.request.requested_outputs.emplace_back(name);
    element binary;
    if (FindKey(parameters, "binary_data", binary)) {
      if (binary.type() != element_type::BOOL) {
        return InvalidArgument(
            fmt::format("parameter \"binary_data\" of {} must be true or false", where));
      }
      decoded.binary_choices.emplace_back(name, bool(binary));
    }
  }
  return Status::Ok();
}

std::string_view SimdjsonErrorText(simdjson::error_code error, size_t max_depth,
                                   std::string& buffer) {
  if (error == simdjson::DEPTH_ERROR) {
    buffer = fmt::format("the JSON nests deeper than the limit of {} levels", max_depth);
  } else if (error == simdjson::NUMBER_ERROR) {
    buffer = "the body holds a number that is malformed or out of 64-bit range";
  } else {
    buffer = fmt::format("the body is not valid JSON: {}", simdjson::error_message(error));
  }
  return buffer;
}

}  // namespace

bool JsonInferRequest::WantsBinary(std::string_view output_name) const {
  const auto choice = std::find_if(binary_choices.begin(), binary_choices.end(),
                                   [&](const auto& c) { return c.first == output_name; });
  return choice != binary_choices.end() ? choice->second : all_outputs_binary;
}

Result<JsonInferRequest> DecodeJsonInferRequest(std::string_view json, std::string_view binary,
                                                size_t max_depth) {
  simdjson::dom::parser parser;
  if (parser.allocate(std::max<size_t>(json.size(), 64), max_depth) != simdjson::SUCCESS) {
    return InvalidArgument("the JSON body is too large to parse");
  }
  element root_value;
  if (const auto error = parser.parse(json.data(), json.size()).get(root_value);
      error != simdjson::SUCCESS) {
    std::string text;
    return InvalidArgument(std::string(SimdjsonErrorText(error, max_depth, text)));
  }
  if (root_value.type() != element_type::OBJECT) {
    return InvalidArgument("an infer request must be a JSON object");
  }
  const simdjson::dom::object root(root_value);
  JsonInferRequest decoded;

  element id;
  if (root.at_key("id").get(id) == simdjson::SUCCESS) {
    if (id.type() != element_type::STRING) {
      return InvalidArgument("\"id\" must be a string");
    }
    decoded.request.id = std::string(std::string_view(id));
  }
  element reply_to;
  if (root.at_key("reply_to").get(reply_to) == simdjson::SUCCESS) {
    if (reply_to.type() != element_type::STRING) {
      return InvalidArgument("\"reply_to\" must be a string, the topic for the answer");
    }
    decoded.reply_to = std::string(std::string_view(reply_to));
  }
  PERCH_ASSIGN_OR_RETURN(const auto parameters,
                         GetOptionalObject(root, "parameters", "the request"));
  PERCH_ASSIGN_OR_RETURN(decoded.all_outputs_binary,
                         GetBoolParameter(parameters, "binary_data_output", "the request"));
  element timeout;
  if (FindKey(parameters, "timeout", timeout)) {
    // Microseconds, as Triton reads the same parameter.
    if (timeout.type() != element_type::INT64 || int64_t(timeout) < 0) {
      return InvalidArgument("parameter \"timeout\" must be a non-negative integer (microseconds)");
    }
    decoded.request.timeout = std::chrono::microseconds(int64_t(timeout));
  }
  PERCH_RETURN_IF_ERROR(DecodeParameters(parameters, decoded.request.parameters));

  element inputs_value;
  if (root.at_key("inputs").get(inputs_value) != simdjson::SUCCESS ||
      inputs_value.type() != element_type::ARRAY) {
    return InvalidArgument("an infer request needs \"inputs\", an array of tensors");
  }
  size_t index = 0;
  for (const element input_value : simdjson::dom::array(inputs_value)) {
    PERCH_ASSIGN_OR_RETURN(auto tensor, DecodeInput(input_value, index++, binary));
    decoded.request.inputs.push_back(std::move(tensor));
  }
  if (!binary.empty()) {
    return InvalidArgument(fmt::format(
        "the body has {} bytes of binary data that no input's binary_data_size accounts for",
        binary.size()));
  }
  PERCH_RETURN_IF_ERROR(DecodeOutputs(root, decoded));
  return decoded;
}

std::string JsonQuote(std::string_view value) {
  std::string out;
  out.reserve(value.size() + 2);
  out += '"';
  for (const char c : value) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
        } else {
          out += c;
        }
    }
  }
  out += '"';
  return out;
}

namespace {

template <typename T>
void AppendNumber(std::string& out, T value) {
  if constexpr (std::is_floating_point_v<T>) {
    if (!std::isfinite(value)) {
      out += "null";  // JSON has no NaN or infinity; binary outputs keep them
      return;
    }
  }
  char buffer[64];
  const auto result = std::to_chars(buffer, buffer + sizeof(buffer), value);
  out.append(buffer, result.ptr);
}

template <typename T, typename Convert>
void AppendNumbers(std::string& out, const std::string& data, Convert convert) {
  const size_t count = data.size() / sizeof(T);
  for (size_t i = 0; i < count; ++i) {
    if (i) {
      out += ',';
    }
    AppendNumber(out, convert(ReadElement<T>(data, i)));
  }
}

Status AppendJsonData(std::string& out, const Tensor& tensor) {
  const auto identity = [](auto v) { return v; };
  switch (tensor.datatype) {
    case DataType::kBool:
      for (size_t i = 0; i < tensor.data.size(); ++i) {
        out += i ? "," : "";
        out += tensor.data[i] ? "true" : "false";
      }
      return Status::Ok();
    case DataType::kUint8:
      AppendNumbers<uint8_t>(out, tensor.data, [](uint8_t v) { return unsigned{v}; });
      return Status::Ok();
    case DataType::kUint16:
      AppendNumbers<uint16_t>(out, tensor.data, identity);
      return Status::Ok();
    case DataType::kUint32:
      AppendNumbers<uint32_t>(out, tensor.data, identity);
      return Status::Ok();
    case DataType::kUint64:
      AppendNumbers<uint64_t>(out, tensor.data, identity);
      return Status::Ok();
    case DataType::kInt8:
      AppendNumbers<int8_t>(out, tensor.data, [](int8_t v) { return int{v}; });
      return Status::Ok();
    case DataType::kInt16:
      AppendNumbers<int16_t>(out, tensor.data, identity);
      return Status::Ok();
    case DataType::kInt32:
      AppendNumbers<int32_t>(out, tensor.data, identity);
      return Status::Ok();
    case DataType::kInt64:
      AppendNumbers<int64_t>(out, tensor.data, identity);
      return Status::Ok();
    case DataType::kFp16:
      AppendNumbers<uint16_t>(out, tensor.data, HalfToFloat);
      return Status::Ok();
    case DataType::kBf16:
      AppendNumbers<uint16_t>(out, tensor.data, Bfloat16ToFloat);
      return Status::Ok();
    case DataType::kFp32:
      AppendNumbers<float>(out, tensor.data, identity);
      return Status::Ok();
    case DataType::kFp64:
      AppendNumbers<double>(out, tensor.data, identity);
      return Status::Ok();
    case DataType::kBytes: {
      PERCH_ASSIGN_OR_RETURN(const auto elements,
                             SplitBytesElements(tensor.data, ElementCount(tensor.shape).value()));
      for (size_t i = 0; i < elements.size(); ++i) {
        if (simdjson::validate_utf8(elements[i].data(), elements[i].size()) == false) {
          return InvalidArgument(fmt::format(
              "output '{}' holds bytes that are not UTF-8 text, which JSON cannot carry; ask for "
              "it with \"binary_data\": true",
              tensor.name));
        }
        out += i ? "," : "";
        out += JsonQuote(elements[i]);
      }
      return Status::Ok();
    }
  }
  return Internal("unhandled datatype");
}

}  // namespace

Result<EncodedInferResponse> EncodeJsonInferResponse(const InferResponse& response,
                                                     const JsonInferRequest& request) {
  EncodedInferResponse encoded;
  std::string& out = encoded.body;
  out += "{\"model_name\":";
  out += JsonQuote(response.model_name);
  out += ",\"model_version\":";
  out += JsonQuote(response.model_version);
  if (!response.id.empty()) {
    out += ",\"id\":";
    out += JsonQuote(response.id);
  }
  if (!response.artifact_digest.empty()) {
    out += ",\"parameters\":{";
    out += JsonQuote(kArtifactDigestParameter);
    out += ':';
    out += JsonQuote(response.artifact_digest);
    out += '}';
  }
  out += ",\"outputs\":[";
  std::vector<const Tensor*> binary_tensors;
  for (size_t i = 0; i < response.outputs.size(); ++i) {
    const Tensor& tensor = response.outputs[i];
    out += i ? ",{\"name\":" : "{\"name\":";
    out += JsonQuote(tensor.name);
    out += ",\"datatype\":\"";
    out += ToString(tensor.datatype);
    out += "\",\"shape\":[";
    for (size_t d = 0; d < tensor.shape.size(); ++d) {
      out += d ? "," : "";
      AppendNumber(out, tensor.shape[d]);
    }
    out += ']';
    if (request.WantsBinary(tensor.name)) {
      out += fmt::format(",\"parameters\":{{\"binary_data_size\":{}}}}}", tensor.data.size());
      binary_tensors.push_back(&tensor);
      continue;
    }
    out += ",\"data\":[";
    PERCH_RETURN_IF_ERROR(AppendJsonData(out, tensor));
    out += "]}";
  }
  out += "]}";
  encoded.json_size = out.size();
  encoded.has_binary = !binary_tensors.empty();
  for (const Tensor* tensor : binary_tensors) {
    out += tensor->data;
  }
  return encoded;
}

}  // namespace perch
