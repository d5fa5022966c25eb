#include "engine/onnx_external_data.h"

#include <fmt/format.h>

#include <cstdint>
#include <optional>

namespace perch {
namespace {

// Field numbers from onnx.proto; only the path to TensorProto.external_data.
constexpr uint32_t kModelGraph = 7;
constexpr uint32_t kModelFunctions = 25;
constexpr uint32_t kFunctionNode = 7;
constexpr uint32_t kGraphNode = 1;
constexpr uint32_t kGraphInitializer = 5;
constexpr uint32_t kGraphSparseInitializer = 15;
constexpr uint32_t kNodeAttribute = 5;
constexpr uint32_t kAttributeTensor = 5;
constexpr uint32_t kAttributeGraph = 6;
constexpr uint32_t kAttributeTensors = 10;
constexpr uint32_t kAttributeGraphs = 11;
constexpr uint32_t kAttributeSparseTensor = 22;
constexpr uint32_t kAttributeSparseTensors = 23;
constexpr uint32_t kSparseValues = 1;
constexpr uint32_t kSparseIndices = 2;
constexpr uint32_t kTensorExternalData = 13;
constexpr uint32_t kEntryKey = 1;
constexpr uint32_t kEntryValue = 2;

enum class Kind { kModel, kFunction, kGraph, kNode, kAttribute, kSparseTensor, kTensor, kEntry };

// The message fields that lead, at any depth, to a TensorProto's external data.
struct Edge {
  Kind parent;
  uint32_t field;
  Kind child;
};
constexpr Edge kEdges[] = {
    {Kind::kModel, kModelGraph, Kind::kGraph},
    {Kind::kModel, kModelFunctions, Kind::kFunction},
    {Kind::kFunction, kFunctionNode, Kind::kNode},
    {Kind::kGraph, kGraphNode, Kind::kNode},
    {Kind::kGraph, kGraphInitializer, Kind::kTensor},
    {Kind::kGraph, kGraphSparseInitializer, Kind::kSparseTensor},
    {Kind::kNode, kNodeAttribute, Kind::kAttribute},
    {Kind::kAttribute, kAttributeTensor, Kind::kTensor},
    {Kind::kAttribute, kAttributeTensors, Kind::kTensor},
    {Kind::kAttribute, kAttributeGraph, Kind::kGraph},
    {Kind::kAttribute, kAttributeGraphs, Kind::kGraph},
    {Kind::kAttribute, kAttributeSparseTensor, Kind::kSparseTensor},
    {Kind::kAttribute, kAttributeSparseTensors, Kind::kSparseTensor},
    {Kind::kSparseTensor, kSparseValues, Kind::kTensor},
    {Kind::kSparseTensor, kSparseIndices, Kind::kTensor},
    {Kind::kTensor, kTensorExternalData, Kind::kEntry},
};

// Subgraphs nest (If, Loop, Scan); a crafted file must not exhaust the stack.
constexpr int kMaxNesting = 64;

class Walker {
 public:
  Status Walk(std::string_view message, Kind kind, int depth) {
    if (depth > kMaxNesting) {
      return InvalidArgument(fmt::format("the model nests subgraphs deeper than {}", kMaxNesting));
    }
    std::string key;
    std::string value;
    size_t at = 0;
    while (at < message.size()) {
      uint64_t tag = 0;
      PERCH_RETURN_IF_ERROR(ReadVarint(message, at, tag));
      const auto field = static_cast<uint32_t>(tag >> 3);
      const auto wire_type = static_cast<uint32_t>(tag & 7);
      std::string_view payload;
      switch (wire_type) {
        case 0: {
          uint64_t ignored = 0;
          PERCH_RETURN_IF_ERROR(ReadVarint(message, at, ignored));
          continue;
        }
        case 1:
          PERCH_RETURN_IF_ERROR(Skip(message, at, 8));
          continue;
        case 5:
          PERCH_RETURN_IF_ERROR(Skip(message, at, 4));
          continue;
        case 2: {
          uint64_t length = 0;
          PERCH_RETURN_IF_ERROR(ReadVarint(message, at, length));
          if (length > message.size() - at) {
            return Malformed();
          }
          payload = message.substr(at, length);
          at += length;
          break;
        }
        default:
          return Malformed();
      }
      const auto child = ChildKind(kind, field);
      if (child) {
        PERCH_RETURN_IF_ERROR(Walk(payload, *child, depth + 1));
      } else if (kind == Kind::kEntry && field == kEntryKey) {
        key = payload;
      } else if (kind == Kind::kEntry && field == kEntryValue) {
        value = payload;
      }
    }
    if (kind == Kind::kEntry && key == "location") {
      locations_.push_back(value);
    }
    return Status::Ok();
  }

  std::vector<std::string> TakeLocations() { return std::move(locations_); }

 private:
  static std::optional<Kind> ChildKind(Kind parent, uint32_t field) {
    for (const auto& edge : kEdges) {
      if (edge.parent == parent && edge.field == field) {
        return edge.child;
      }
    }
    return std::nullopt;
  }

  static Status Malformed() { return InvalidArgument("the file is not a well-formed ONNX model"); }

  static Status ReadVarint(std::string_view message, size_t& at, uint64_t& value) {
    value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (at >= message.size()) {
        return Malformed();
      }
      const auto byte = static_cast<uint8_t>(message[at++]);
      value |= static_cast<uint64_t>(byte & 0x7F) << shift;
      if (!(byte & 0x80)) {
        return Status::Ok();
      }
    }
    return Malformed();
  }

  static Status Skip(std::string_view message, size_t& at, size_t bytes) {
    if (bytes > message.size() - at) {
      return Malformed();
    }
    at += bytes;
    return Status::Ok();
  }

  std::vector<std::string> locations_;
};

}  // namespace

Result<std::vector<std::string>> ListOnnxExternalDataLocations(std::string_view model) {
  Walker walker;
  PERCH_RETURN_IF_ERROR(walker.Walk(model, Kind::kModel, 0));
  return walker.TakeLocations();
}

}  // namespace perch
