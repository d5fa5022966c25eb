// ort_reference: runs one inference with ONNX Runtime called directly, the
// reference the integration tests compare perch's outputs against.
//
// Usage: ort_reference MODEL.onnx REQUEST.json [--carry OUTPUT=INPUT]...
//
// REQUEST.json may also be an array of requests, run in turn on one session
// and answered by an array: how a stream of chunks runs step by step. With
// --carry, from the second request on, INPUT is the previous answer's
// OUTPUT (a recurrent model's state, such as silero_vad's hn -> h).
//
// REQUEST.json is an Open Inference Protocol infer request body:
//   {"inputs": [{"name", "datatype", "shape", "data"}]}
// with "data" flat or nested in row-major order. Every output of the model is
// printed on stdout as {"outputs": [{"name", "datatype", "shape", "data"}]}
// with flat data. On error: a message on stderr and exit status 1.
//
// The code shares nothing with perch on purpose: a bug in perch's tensor
// encoding must not be repeated here and cancel out.

#include <onnxruntime_cxx_api.h>

#include <array>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace {

using Json = nlohmann::json;

struct DataType {
  std::string_view oip_name;
  ONNXTensorElementDataType onnx_type;
};

constexpr std::array kDataTypes = {
    DataType{"BOOL", ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL},
    DataType{"UINT8", ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8},
    DataType{"UINT16", ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16},
    DataType{"UINT32", ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32},
    DataType{"UINT64", ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64},
    DataType{"INT8", ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8},
    DataType{"INT16", ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16},
    DataType{"INT32", ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32},
    DataType{"INT64", ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64},
    DataType{"FP16", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16},
    DataType{"FP32", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT},
    DataType{"FP64", ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE},
    DataType{"BYTES", ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING},
    DataType{"BF16", ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16},
};

ONNXTensorElementDataType OnnxType(std::string_view oip_name) {
  for (const auto& type : kDataTypes) {
    if (type.oip_name == oip_name) {
      return type.onnx_type;
    }
  }
  throw std::runtime_error("unsupported datatype \"" + std::string(oip_name) + "\"");
}

std::string_view OipName(ONNXTensorElementDataType onnx_type) {
  for (const auto& type : kDataTypes) {
    if (type.onnx_type == onnx_type) {
      return type.oip_name;
    }
  }
  throw std::runtime_error("model uses ONNX element type " + std::to_string(onnx_type) +
                           ", which has no OIP datatype");
}

// Calls visit(std::type_identity<T>{}) with T the C++ element type of onnx_type.
template <typename Visitor>
decltype(auto) VisitElementType(ONNXTensorElementDataType onnx_type, Visitor&& visit) {
  switch (onnx_type) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL:
      return visit(std::type_identity<bool>{});
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8:
      return visit(std::type_identity<uint8_t>{});
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16:
      return visit(std::type_identity<uint16_t>{});
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32:
      return visit(std::type_identity<uint32_t>{});
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64:
      return visit(std::type_identity<uint64_t>{});
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8:
      return visit(std::type_identity<int8_t>{});
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16:
      return visit(std::type_identity<int16_t>{});
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32:
      return visit(std::type_identity<int32_t>{});
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64:
      return visit(std::type_identity<int64_t>{});
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16:
      return visit(std::type_identity<Ort::Float16_t>{});
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT:
      return visit(std::type_identity<float>{});
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE:
      return visit(std::type_identity<double>{});
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING:
      return visit(std::type_identity<std::string>{});
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16:
      return visit(std::type_identity<Ort::BFloat16_t>{});
    default:
      throw std::runtime_error("unsupported ONNX element type " + std::to_string(onnx_type));
  }
}

template <typename T>
constexpr bool kIsHalf = std::is_same_v<T, Ort::Float16_t> || std::is_same_v<T, Ort::BFloat16_t>;

// Throws unless ok: a JSON element the OIP encoding does not allow for the
// input's datatype is refused rather than guessed at.
void Require(bool ok, std::string_view what, const Json& value) {
  if (!ok) {
    throw std::runtime_error(std::string(what) + ": " + value.dump());
  }
}

template <typename T>
T ElementFromJson(const Json& value) {
  if constexpr (std::is_same_v<T, bool>) {
    Require(value.is_boolean(), "BOOL element is not true or false", value);
    return value.get<bool>();
  } else if constexpr (std::is_integral_v<T>) {
    Require(value.is_number_integer(), "element is not an integer", value);
    Require(value.is_number_unsigned() ? std::in_range<T>(value.get<uint64_t>())
                                       : std::in_range<T>(value.get<int64_t>()),
            "integer element out of range", value);
    return value.get<T>();
  } else if constexpr (std::is_same_v<T, std::string>) {
    Require(value.is_string(), "BYTES element is not a string", value);
    return value.get<std::string>();
  } else if constexpr (kIsHalf<T>) {
    Require(value.is_number(), "element is not a number", value);
    return T(value.get<float>());
  } else {
    Require(value.is_number(), "element is not a number", value);
    return value.get<T>();
  }
}

// A float or double widens to a JSON double exactly and nlohmann::json prints
// the shortest text that reads back to the same double, so every output
// element keeps its full precision (at least max_digits10 of its own type).
template <typename T>
Json ElementToJson(const T& element) {
  if constexpr (kIsHalf<T>) {
    return element.ToFloat();
  } else {
    return element;
  }
}

// Appends the leaves of a possibly nested JSON array, in row-major order.
void Flatten(const Json& data, std::vector<const Json*>& leaves) {
  if (!data.is_array()) {
    leaves.push_back(&data);
    return;
  }
  for (const auto& item : data) {
    Flatten(item, leaves);
  }
}

std::vector<int64_t> ShapeFromJson(const Json& shape) {
  std::vector<int64_t> dims;
  for (const auto& dim : shape) {
    if (!dim.is_number_integer() || dim.get<int64_t>() < 0) {
      throw std::runtime_error("invalid shape " + shape.dump());
    }
    dims.push_back(dim.get<int64_t>());
  }
  return dims;
}

size_t ElementCount(const std::vector<int64_t>& shape) {
  size_t count = 1;
  for (const int64_t dim : shape) {
    count *= static_cast<size_t>(dim);
  }
  return count;
}

Ort::Value TensorFromJson(const Json& input, OrtAllocator* allocator) {
  const std::string name = input.at("name").get<std::string>();
  const std::vector<int64_t> shape = ShapeFromJson(input.at("shape"));
  std::vector<const Json*> leaves;
  Flatten(input.at("data"), leaves);
  if (leaves.size() != ElementCount(shape)) {
    throw std::runtime_error("input " + name + ": " + std::to_string(leaves.size()) +
                             " elements do not fill shape " + input.at("shape").dump());
  }

  const ONNXTensorElementDataType onnx_type = OnnxType(input.at("datatype").get<std::string>());
  Ort::Value tensor = Ort::Value::CreateTensor(allocator, shape.data(), shape.size(), onnx_type);
  VisitElementType(onnx_type, [&]<typename T>(std::type_identity<T>) {
    for (size_t i = 0; i < leaves.size(); ++i) {
      if constexpr (std::is_same_v<T, std::string>) {
        // Sized copy: BYTES elements may hold NUL characters.
        const std::string element = ElementFromJson<T>(*leaves[i]);
        char* buffer = tensor.GetResizedStringTensorElementBuffer(i, element.size());
        element.copy(buffer, element.size());
      } else {
        tensor.GetTensorMutableData<T>()[i] = ElementFromJson<T>(*leaves[i]);
      }
    }
  });
  return tensor;
}

Json TensorToJson(const std::string& name, const Ort::Value& tensor) {
  const auto info = tensor.GetTensorTypeAndShapeInfo();
  const ONNXTensorElementDataType onnx_type = info.GetElementType();
  const size_t count = info.GetElementCount();
  Json data = Json::array();
  VisitElementType(onnx_type, [&]<typename T>(std::type_identity<T>) {
    for (size_t i = 0; i < count; ++i) {
      if constexpr (std::is_same_v<T, std::string>) {
        data.push_back(tensor.GetStringTensorElement(i));
      } else {
        data.push_back(ElementToJson(tensor.GetTensorData<T>()[i]));
      }
    }
  });
  return {{"name", name},
          {"datatype", OipName(onnx_type)},
          {"shape", info.GetShape()},
          {"data", std::move(data)}};
}

Json ReadJsonFile(const std::string& path) {
  std::ifstream file(path);
  if (!file) {
    throw std::runtime_error("cannot open " + path);
  }
  return Json::parse(file);
}

std::vector<const char*> CStrings(const std::vector<std::string>& strings) {
  std::vector<const char*> pointers;
  pointers.reserve(strings.size());
  for (const auto& s : strings) {
    pointers.push_back(s.c_str());
  }
  return pointers;
}

using Carry = std::vector<std::pair<std::string, std::string>>;  // output -> input

Json RunOne(Ort::Session& session, const Json& request, const Json* previous, const Carry& carry) {
  Ort::AllocatorWithDefaultOptions allocator;
  std::vector<std::string> input_names;
  std::vector<Ort::Value> input_tensors;
  for (const auto& input : request.at("inputs")) {
    const std::string name = input.at("name").get<std::string>();
    const Json* value = &input;
    for (const auto& [from, to] : carry) {
      if (previous != nullptr && to == name) {
        for (const auto& output : previous->at("outputs")) {
          if (output.at("name") == from) {
            value = &output;
          }
        }
      }
    }
    input_names.push_back(name);
    input_tensors.push_back(TensorFromJson(*value, allocator));
  }

  std::vector<std::string> output_names;
  for (size_t i = 0; i < session.GetOutputCount(); ++i) {
    output_names.emplace_back(session.GetOutputNameAllocated(i, allocator).get());
  }

  const std::vector<const char*> input_ptrs = CStrings(input_names);
  const std::vector<const char*> output_ptrs = CStrings(output_names);
  std::vector<Ort::Value> outputs =
      session.Run(Ort::RunOptions{nullptr}, input_ptrs.data(), input_tensors.data(),
                  input_tensors.size(), output_ptrs.data(), output_ptrs.size());

  Json response = {{"outputs", Json::array()}};
  for (size_t i = 0; i < outputs.size(); ++i) {
    response["outputs"].push_back(TensorToJson(output_names[i], outputs[i]));
  }
  return response;
}

Json Run(const std::string& model_path, const Json& request, const Carry& carry) {
  Ort::Env env(ORT_LOGGING_LEVEL_WARNING, "ort_reference");
  Ort::SessionOptions options;
  options.SetIntraOpNumThreads(1);
  Ort::Session session(env, model_path.c_str(), options);
  if (!request.is_array()) {
    return RunOne(session, request, nullptr, carry);
  }
  Json responses = Json::array();
  for (const auto& one : request) {
    const Json* previous = responses.empty() ? nullptr : &responses.back();
    Json response = RunOne(session, one, previous, carry);
    responses.push_back(std::move(response));
  }
  return responses;
}

}  // namespace

int main(int argc, char** argv) {
  // As perch's main does: no ONNX Runtime telemetry, on both sides alike.
  setenv("ORT_DISABLE_TELEMETRY", "1", /*overwrite=*/0);
  Carry carry;
  for (int i = 3; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const std::string pair = argv[i + 1];
    const size_t equals = pair.find('=');
    if (flag != "--carry" || equals == std::string::npos) {
      argc = 0;
      break;
    }
    carry.emplace_back(pair.substr(0, equals), pair.substr(equals + 1));
  }
  if (argc < 3 || argc % 2 == 0) {
    std::cerr << "usage: " << argv[0] << " MODEL.onnx REQUEST.json [--carry OUTPUT=INPUT]...\n";
    return 1;
  }
  try {
    std::cout << Run(argv[1], ReadJsonFile(argv[2]), carry).dump() << '\n';
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "ort_reference: " << e.what() << '\n';
    return 1;
  }
}
