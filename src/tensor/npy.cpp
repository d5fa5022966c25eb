#include "tensor/npy.h"

#include <fmt/format.h>

#include <array>
#include <charconv>
#include <cstdint>

namespace perch {
namespace {

constexpr std::string_view kMagic = "\x93NUMPY";

struct NpyType {
  std::string_view descr;
  DataType datatype;
};

constexpr std::array<NpyType, 12> kTypes{{
    {"|b1", DataType::kBool},
    {"|u1", DataType::kUint8},
    {"<u2", DataType::kUint16},
    {"<u4", DataType::kUint32},
    {"<u8", DataType::kUint64},
    {"|i1", DataType::kInt8},
    {"<i2", DataType::kInt16},
    {"<i4", DataType::kInt32},
    {"<i8", DataType::kInt64},
    {"<f2", DataType::kFp16},
    {"<f4", DataType::kFp32},
    {"<f8", DataType::kFp64},
}};

Status Bad(std::string_view what) {
  return InvalidArgument(fmt::format("not a usable .npy file: {}", what));
}

// The text after `'key':` in the header dict, up to the end of the header.
Result<std::string_view> ValueOf(std::string_view header, std::string_view key) {
  const std::string quoted = fmt::format("'{}':", key);
  const size_t at = header.find(quoted);
  if (at == std::string_view::npos) {
    return Bad(fmt::format("the header has no '{}'", key));
  }
  std::string_view rest = header.substr(at + quoted.size());
  while (!rest.empty() && rest.front() == ' ') {
    rest.remove_prefix(1);
  }
  return rest;
}

Result<std::string_view> ParseDescr(std::string_view header) {
  PERCH_ASSIGN_OR_RETURN(std::string_view rest, ValueOf(header, "descr"));
  if (rest.empty() || rest.front() != '\'') {
    return Bad("'descr' is not a simple dtype string (structured arrays are not tensors)");
  }
  const size_t end = rest.find('\'', 1);
  if (end == std::string_view::npos) {
    return Bad("'descr' is not terminated");
  }
  return rest.substr(1, end - 1);
}

Result<Shape> ParseShape(std::string_view header) {
  PERCH_ASSIGN_OR_RETURN(std::string_view rest, ValueOf(header, "shape"));
  if (rest.empty() || rest.front() != '(') {
    return Bad("'shape' is not a tuple");
  }
  const size_t end = rest.find(')');
  if (end == std::string_view::npos) {
    return Bad("'shape' is not terminated");
  }
  std::string_view dims = rest.substr(1, end - 1);
  Shape shape;
  while (!dims.empty()) {
    while (!dims.empty() && (dims.front() == ' ' || dims.front() == ',')) {
      dims.remove_prefix(1);
    }
    if (dims.empty()) {
      break;
    }
    int64_t dim = 0;
    const auto [ptr, error] = std::from_chars(dims.data(), dims.data() + dims.size(), dim);
    if (error != std::errc() || dim < 0) {
      return Bad("'shape' holds something other than non-negative integers");
    }
    shape.push_back(dim);
    dims.remove_prefix(static_cast<size_t>(ptr - dims.data()));
  }
  return shape;
}

}  // namespace

Result<Tensor> DecodeNpy(std::string file_bytes, std::string name) {
  const std::string_view file = file_bytes;
  if (file.size() < 10 || file.substr(0, kMagic.size()) != kMagic) {
    return Bad("it does not start with the NumPy magic bytes");
  }
  const auto major = static_cast<uint8_t>(file[6]);
  size_t header_length = 0;
  size_t header_start = 0;
  if (major == 1) {
    header_length =
        static_cast<uint8_t>(file[8]) | (static_cast<size_t>(static_cast<uint8_t>(file[9])) << 8);
    header_start = 10;
  } else if (major == 2 || major == 3) {
    if (file.size() < 12) {
      return Bad("the header is truncated");
    }
    for (int i = 3; i >= 0; --i) {
      header_length = (header_length << 8) | static_cast<uint8_t>(file[8 + static_cast<size_t>(i)]);
    }
    header_start = 12;
  } else {
    return Bad(fmt::format("format version {} is unknown", major));
  }
  if (header_length > file.size() - header_start) {
    return Bad("the header runs past the end of the file");
  }
  const std::string_view header = file.substr(header_start, header_length);
  const std::string_view payload = file.substr(header_start + header_length);

  PERCH_ASSIGN_OR_RETURN(const std::string_view fortran, ValueOf(header, "fortran_order"));
  if (fortran.substr(0, 4) == "True") {
    return Bad("Fortran-ordered arrays are not supported; save with np.ascontiguousarray");
  }
  PERCH_ASSIGN_OR_RETURN(const std::string_view descr, ParseDescr(header));
  Tensor tensor{.name = std::move(name), .datatype = DataType::kFp32, .shape = {}, .data = {}};
  PERCH_ASSIGN_OR_RETURN(tensor.shape, ParseShape(header));
  PERCH_ASSIGN_OR_RETURN(const int64_t count, ElementCount(tensor.shape));

  if (descr.size() > 2 && descr.substr(0, 2) == "|S") {
    size_t width = 0;
    const auto [ptr, error] = std::from_chars(descr.data() + 2, descr.data() + descr.size(), width);
    if (error != std::errc() || width == 0 ||
        static_cast<uint64_t>(count) > payload.size() / width ||
        payload.size() != static_cast<size_t>(count) * width) {
      return Bad(fmt::format("the data does not hold {} strings of dtype {}", count, descr));
    }
    tensor.datatype = DataType::kBytes;
    for (int64_t i = 0; i < count; ++i) {
      std::string_view element = payload.substr(static_cast<size_t>(i) * width, width);
      element = element.substr(0, element.find_last_not_of('\0') + 1);
      AppendBytesElement(tensor.data, element);
    }
    return tensor;
  }
  for (const auto& type : kTypes) {
    if (type.descr == descr ||
        (type.descr[0] == '|' && descr.size() == 3 && descr.substr(1) == type.descr.substr(1))) {
      tensor.datatype = type.datatype;
      file_bytes.erase(0, file.size() - payload.size());
      tensor.data = std::move(file_bytes);
      PERCH_RETURN_IF_ERROR(ValidateTensorData(tensor));
      return tensor;
    }
  }
  return Bad(fmt::format("dtype '{}' is not supported (little-endian numbers, bool, or bytes 'S')",
                         descr));
}

}  // namespace perch
