// Tensor and DataType: perch's own, transport-neutral representation of
// inference inputs and outputs, and the request/response that carry them.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "tensor/infer_parameters.h"

namespace perch {

// The Open Inference Protocol datatypes.
enum class DataType {
  kBool,
  kUint8,
  kUint16,
  kUint32,
  kUint64,
  kInt8,
  kInt16,
  kInt32,
  kInt64,
  kFp16,
  kBf16,
  kFp32,
  kFp64,
  kBytes,
};

// "BOOL", "UINT8", ..., "BYTES" as the protocol spells them.
std::string_view ToString(DataType datatype);
std::optional<DataType> DataTypeFromString(std::string_view name);

// Bytes per element; 0 for BYTES, whose elements vary in size.
size_t ElementSize(DataType datatype);

using Shape = std::vector<int64_t>;

// The number of elements of `shape`: InvalidArgument for a negative dim or a
// product that does not fit in int64.
Result<int64_t> ElementCount(const Shape& shape);

// "[1,3,224,224]", for error messages.
std::string ShapeToString(const Shape& shape);

// Whether `shape` fits `pattern`: the same rank, and equal in every dim
// the pattern fixes (a negative pattern dim takes any size).
bool ShapeFits(const Shape& pattern, const Shape& shape);

struct Tensor {
  std::string name;
  DataType datatype = DataType::kFp32;
  Shape shape;
  // Row-major little-endian element bytes. BYTES elements are each a 4-byte
  // little-endian length followed by that many bytes, the layout of the
  // binary tensor extension, so binary requests need no conversion.
  std::string data;
};

// Checks that `tensor.data` holds exactly the elements its shape says.
Status ValidateTensorData(const Tensor& tensor);

// Appends one element of a numeric tensor to its data.
template <typename T>
void AppendElement(std::string& data, T value) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));
  data.append(bytes, sizeof(T));
}

// Element `index` of a numeric tensor's data (which must hold it).
template <typename T>
T ReadElement(std::string_view data, size_t index) {
  T value;
  std::memcpy(&value, data.data() + index * sizeof(T), sizeof(T));
  return value;
}

// Splits BYTES tensor data into its elements (views into `data`).
Result<std::vector<std::string_view>> SplitBytesElements(std::string_view data,
                                                         int64_t expected_count);

// Appends one BYTES element in the length-prefixed layout.
void AppendBytesElement(std::string& data, std::string_view element);

struct InferRequest {
  std::string model_name;
  std::string model_version;  // empty: the newest ready version
  std::string id;
  std::vector<Tensor> inputs;
  std::vector<std::string> requested_outputs;  // empty: every output, in model order
  std::chrono::microseconds timeout{0};        // 0: no limit
  InferParameters parameters{};                // the request's own (infer_parameters.h)
};

struct InferResponse {
  std::string model_name;
  std::string model_version;
  std::string id;
  std::vector<Tensor> outputs;
  // The artifact that answered (a manifest digest or a signature's root
  // digest), sent as the response parameter kArtifactDigestParameter; may be empty.
  std::string artifact_digest{};
};

inline constexpr std::string_view kArtifactDigestParameter = "perch.digest";

}  // namespace perch
