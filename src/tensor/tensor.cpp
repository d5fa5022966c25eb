#include "tensor/tensor.h"

#include <fmt/format.h>

#include <array>
#include <cstring>
#include <limits>

namespace perch {
namespace {

struct DataTypeInfo {
  DataType datatype;
  std::string_view name;
  size_t element_size;
};

constexpr std::array<DataTypeInfo, 14> kDataTypes{{
    {DataType::kBool, "BOOL", 1},
    {DataType::kUint8, "UINT8", 1},
    {DataType::kUint16, "UINT16", 2},
    {DataType::kUint32, "UINT32", 4},
    {DataType::kUint64, "UINT64", 8},
    {DataType::kInt8, "INT8", 1},
    {DataType::kInt16, "INT16", 2},
    {DataType::kInt32, "INT32", 4},
    {DataType::kInt64, "INT64", 8},
    {DataType::kFp16, "FP16", 2},
    {DataType::kBf16, "BF16", 2},
    {DataType::kFp32, "FP32", 4},
    {DataType::kFp64, "FP64", 8},
    {DataType::kBytes, "BYTES", 0},
}};

const DataTypeInfo& Info(DataType datatype) { return kDataTypes[static_cast<size_t>(datatype)]; }

}  // namespace

std::string_view ToString(DataType datatype) { return Info(datatype).name; }

std::optional<DataType> DataTypeFromString(std::string_view name) {
  for (const auto& info : kDataTypes) {
    if (info.name == name) {
      return info.datatype;
    }
  }
  return std::nullopt;
}

size_t ElementSize(DataType datatype) { return Info(datatype).element_size; }

Result<int64_t> ElementCount(const Shape& shape) {
  int64_t count = 1;
  for (int64_t dim : shape) {
    if (dim < 0) {
      return InvalidArgument(
          fmt::format("shape {} has a negative dimension", ShapeToString(shape)));
    }
    if (dim != 0 && count > std::numeric_limits<int64_t>::max() / dim) {
      return InvalidArgument(
          fmt::format("shape {} has more elements than fit in 64 bits", ShapeToString(shape)));
    }
    count *= dim;
  }
  return count;
}

std::string ShapeToString(const Shape& shape) { return fmt::format("[{}]", fmt::join(shape, ",")); }

bool ShapeFits(const Shape& pattern, const Shape& shape) {
  if (pattern.size() != shape.size()) {
    return false;
  }
  for (size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] >= 0 && shape[i] != pattern[i]) {
      return false;
    }
  }
  return true;
}

Status ValidateTensorData(const Tensor& tensor) {
  PERCH_ASSIGN_OR_RETURN(const int64_t count, ElementCount(tensor.shape));
  if (tensor.datatype == DataType::kBytes) {
    const auto elements = SplitBytesElements(tensor.data, count);
    if (!elements.ok()) {
      return InvalidArgument(
          fmt::format("tensor '{}': {}", tensor.name, elements.status().message()));
    }
    return Status::Ok();
  }
  const size_t element_size = ElementSize(tensor.datatype);
  if (static_cast<uint64_t>(count) > tensor.data.size() / element_size ||
      tensor.data.size() != static_cast<size_t>(count) * element_size) {
    return InvalidArgument(fmt::format(
        "tensor '{}' has {} bytes of data but shape {} of {} needs {} elements of {} bytes",
        tensor.name, tensor.data.size(), ShapeToString(tensor.shape), ToString(tensor.datatype),
        count, element_size));
  }
  return Status::Ok();
}

Result<std::vector<std::string_view>> SplitBytesElements(std::string_view data,
                                                         int64_t expected_count) {
  std::vector<std::string_view> elements;
  size_t offset = 0;
  while (offset < data.size()) {
    if (data.size() - offset < 4) {
      return InvalidArgument(fmt::format(
          "BYTES data is truncated: {} bytes left where a 4-byte length prefix is expected",
          data.size() - offset));
    }
    uint32_t length = 0;
    for (int i = 3; i >= 0; --i) {
      length = (length << 8) | static_cast<uint8_t>(data[offset + static_cast<size_t>(i)]);
    }
    offset += 4;
    if (length > data.size() - offset) {
      return InvalidArgument(
          fmt::format("BYTES element {} claims {} bytes but only {} remain in the buffer",
                      elements.size(), length, data.size() - offset));
    }
    elements.push_back(data.substr(offset, length));
    offset += length;
  }
  if (static_cast<int64_t>(elements.size()) != expected_count) {
    return InvalidArgument(fmt::format("BYTES data holds {} elements but the shape needs {}",
                                       elements.size(), expected_count));
  }
  return elements;
}

void AppendBytesElement(std::string& data, std::string_view element) {
  const auto length = static_cast<uint32_t>(element.size());
  for (int i = 0; i < 4; ++i) {
    data.push_back(static_cast<char>((length >> (8 * i)) & 0xFF));
  }
  data.append(element);
}

}  // namespace perch
