#include "pipeline/operations.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

namespace perch::pipeline {
namespace {

// Calls visit(T{}) with T the C++ type of a computable datatype.
template <typename Visitor>
auto VisitType(DataType datatype, Visitor&& visit) {
  switch (datatype) {
    case DataType::kBool:
      return visit(bool{});
    case DataType::kUint8:
      return visit(uint8_t{});
    case DataType::kUint16:
      return visit(uint16_t{});
    case DataType::kUint32:
      return visit(uint32_t{});
    case DataType::kUint64:
      return visit(uint64_t{});
    case DataType::kInt8:
      return visit(int8_t{});
    case DataType::kInt16:
      return visit(int16_t{});
    case DataType::kInt32:
      return visit(int32_t{});
    case DataType::kInt64:
      return visit(int64_t{});
    case DataType::kFp64:
      return visit(double{});
    default:
      return visit(float{});
  }
}

Result<int64_t> CountOf(const Tensor& tensor) {
  PERCH_ASSIGN_OR_RETURN(const int64_t count, ElementCount(tensor.shape));
  if (!IsComputable(tensor.datatype)) {
    return InvalidArgument(fmt::format("tensor '{}' is {}, which pipeline operations do not take",
                                       tensor.name, ToString(tensor.datatype)));
  }
  if (tensor.data.size() != static_cast<size_t>(count) * ElementSize(tensor.datatype)) {
    return InvalidArgument(fmt::format("tensor '{}' holds {} bytes, not the {} its shape {} needs",
                                       tensor.name, tensor.data.size(),
                                       static_cast<size_t>(count) * ElementSize(tensor.datatype),
                                       ShapeToString(tensor.shape)));
  }
  return count;
}

Result<size_t> CheckAxis(const Shape& shape, int64_t axis) {
  if (axis < 0 || axis >= static_cast<int64_t>(shape.size())) {
    return InvalidArgument(
        fmt::format("axis {} is outside a tensor of shape {}", axis, ShapeToString(shape)));
  }
  return static_cast<size_t>(axis);
}

// Elements before and after `axis`: the tensor is outer x shape[axis] x inner.
std::pair<size_t, size_t> OuterInner(const Shape& shape, size_t axis) {
  size_t outer = 1;
  size_t inner = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i < axis) {
      outer *= static_cast<size_t>(shape[i]);
    } else if (i > axis) {
      inner *= static_cast<size_t>(shape[i]);
    }
  }
  return {outer, inner};
}

}  // namespace

bool IsComputable(DataType datatype) {
  return datatype != DataType::kBytes && datatype != DataType::kFp16 && datatype != DataType::kBf16;
}

double ElementAsDouble(const Tensor& tensor, size_t index) {
  return VisitType(tensor.datatype, [&](auto type) {
    return static_cast<double>(ReadElement<decltype(type)>(tensor.data, index));
  });
}

Result<Tensor> Cast(const Tensor& input, DataType to) {
  PERCH_ASSIGN_OR_RETURN(const int64_t count, CountOf(input));
  if (!IsComputable(to)) {
    return InvalidArgument(fmt::format("cannot cast to {}", ToString(to)));
  }
  Tensor output{.name = {}, .datatype = to, .shape = input.shape, .data = {}};
  output.data.reserve(static_cast<size_t>(count) * ElementSize(to));
  VisitType(input.datatype, [&](auto from_type) {
    using From = decltype(from_type);
    VisitType(to, [&](auto to_type) {
      using To = decltype(to_type);
      for (size_t i = 0; i < static_cast<size_t>(count); ++i) {
        AppendElement<To>(output.data, static_cast<To>(ReadElement<From>(input.data, i)));
      }
    });
  });
  return output;
}

Result<Tensor> ScaleOffset(const Tensor& input, double scale, double offset) {
  PERCH_ASSIGN_OR_RETURN(const int64_t count, CountOf(input));
  Tensor output{.name = {}, .datatype = input.datatype, .shape = input.shape, .data = {}};
  output.data.reserve(input.data.size());
  if (input.datatype == DataType::kFp32) {
    const auto scale32 = static_cast<float>(scale);
    const auto offset32 = static_cast<float>(offset);
    for (size_t i = 0; i < static_cast<size_t>(count); ++i) {
      AppendElement<float>(output.data, ReadElement<float>(input.data, i) * scale32 + offset32);
    }
  } else if (input.datatype == DataType::kFp64) {
    for (size_t i = 0; i < static_cast<size_t>(count); ++i) {
      AppendElement<double>(output.data, ReadElement<double>(input.data, i) * scale + offset);
    }
  } else {
    return InvalidArgument(
        fmt::format("scale takes FP32 or FP64, not {}; cast first", ToString(input.datatype)));
  }
  return output;
}

Result<Tensor> Reshape(const Tensor& input, const Shape& shape) {
  PERCH_ASSIGN_OR_RETURN(const int64_t count, CountOf(input));
  Shape resolved = shape;
  int64_t known = 1;
  const auto unknown = std::count(shape.begin(), shape.end(), -1);
  for (int64_t dim : shape) {
    if (dim != -1) {
      known *= dim;
    }
  }
  if (unknown > 1 || known <= 0 || (unknown == 1 && count % known != 0)) {
    return InvalidArgument(
        fmt::format("cannot reshape {} elements to {}", count, ShapeToString(shape)));
  }
  if (unknown == 1) {
    *std::find(resolved.begin(), resolved.end(), -1) = count / known;
  } else if (known != count) {
    return InvalidArgument(
        fmt::format("cannot reshape {} elements to {}", count, ShapeToString(shape)));
  }
  return Tensor{.name = {}, .datatype = input.datatype, .shape = resolved, .data = input.data};
}

Result<Tensor> Slice(const Tensor& input, int64_t axis, int64_t begin, int64_t end) {
  PERCH_RETURN_IF_ERROR(CountOf(input).status());
  PERCH_ASSIGN_OR_RETURN(const size_t at, CheckAxis(input.shape, axis));
  const int64_t size = input.shape[at];
  const int64_t first = begin < 0 ? size + begin : begin;
  const int64_t last = end < 0 ? size + end : std::min(end, size);
  if (first < 0 || first >= last) {
    return InvalidArgument(fmt::format("slice [{}, {}) is empty or outside dim {} of size {}",
                                       begin, end, axis, size));
  }
  const auto [outer, inner] = OuterInner(input.shape, at);
  const size_t element = ElementSize(input.datatype);
  Tensor output{.name = {}, .datatype = input.datatype, .shape = input.shape, .data = {}};
  output.shape[at] = last - first;
  for (size_t block = 0; block < outer; ++block) {
    const size_t start =
        (block * static_cast<size_t>(size) + static_cast<size_t>(first)) * inner * element;
    output.data.append(input.data, start, static_cast<size_t>(last - first) * inner * element);
  }
  return output;
}

Result<Tensor> Concat(const std::vector<const Tensor*>& inputs, int64_t axis) {
  if (inputs.empty()) {
    return InvalidArgument("concat needs at least one input");
  }
  const Tensor& head = *inputs.front();
  PERCH_ASSIGN_OR_RETURN(const size_t at, CheckAxis(head.shape, axis));
  Tensor output{.name = {}, .datatype = head.datatype, .shape = head.shape, .data = {}};
  output.shape[at] = 0;
  for (const Tensor* input : inputs) {
    PERCH_RETURN_IF_ERROR(CountOf(*input).status());
    bool compatible = input->datatype == head.datatype && input->shape.size() == head.shape.size();
    for (size_t i = 0; compatible && i < head.shape.size(); ++i) {
      compatible = i == at || input->shape[i] == head.shape[i];
    }
    if (!compatible) {
      return InvalidArgument(fmt::format("concat along axis {} cannot join {} {} and {} {}", axis,
                                         ToString(head.datatype), ShapeToString(head.shape),
                                         ToString(input->datatype), ShapeToString(input->shape)));
    }
    output.shape[at] += input->shape[at];
  }
  const size_t element = ElementSize(head.datatype);
  const auto [outer, inner] = OuterInner(head.shape, at);
  for (size_t block = 0; block < outer; ++block) {
    for (const Tensor* input : inputs) {
      const size_t rows = static_cast<size_t>(input->shape[at]);
      output.data.append(input->data, block * rows * inner * element, rows * inner * element);
    }
  }
  return output;
}

Status PushWindow(Tensor& window, const Tensor& input) {
  PERCH_RETURN_IF_ERROR(CountOf(input).status());
  bool compatible = input.datatype == window.datatype && !input.shape.empty() &&
                    input.shape.size() == window.shape.size();
  for (size_t i = 1; compatible && i < input.shape.size(); ++i) {
    compatible = input.shape[i] == window.shape[i];
  }
  if (!compatible) {
    return InvalidArgument(fmt::format("a window of {} {} cannot take {} {}",
                                       ToString(window.datatype), ShapeToString(window.shape),
                                       ToString(input.datatype), ShapeToString(input.shape)));
  }
  if (input.data.size() >= window.data.size()) {
    window.data.assign(input.data, input.data.size() - window.data.size());
    return Status::Ok();
  }
  window.data.erase(0, input.data.size());
  window.data.append(input.data);
  return Status::Ok();
}

Result<Tensor> Filled(DataType datatype, const Shape& shape, double value) {
  PERCH_ASSIGN_OR_RETURN(const int64_t count, ElementCount(shape));
  if (!IsComputable(datatype)) {
    return InvalidArgument(fmt::format("cannot fill a {} tensor", ToString(datatype)));
  }
  Tensor output{.name = {}, .datatype = datatype, .shape = shape, .data = {}};
  VisitType(datatype, [&](auto type) {
    using T = decltype(type);
    for (int64_t i = 0; i < count; ++i) {
      AppendElement<T>(output.data, static_cast<T>(value));
    }
  });
  return output;
}

}  // namespace perch::pipeline
