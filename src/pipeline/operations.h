// Internal to pipeline/: the built-in operations on tensors, pure functions
// of their inputs. Numeric datatypes only (not BYTES, FP16, BF16); the
// caller has checked datatypes and shapes at load, these check sizes again.
#pragma once

#include <cstdint>
#include <vector>

#include "core/status.h"
#include "tensor/tensor.h"

namespace perch::pipeline {

// True for the datatypes the operations compute on.
bool IsComputable(DataType datatype);

// Every element converted to `to` as a C++ static_cast would.
Result<Tensor> Cast(const Tensor& input, DataType to);

// input * scale + offset, for FP32 and FP64 tensors.
Result<Tensor> ScaleOffset(const Tensor& input, double scale, double offset);

// The same elements under `shape`, which may hold one -1 to infer.
Result<Tensor> Reshape(const Tensor& input, const Shape& shape);

// Elements [begin, end) along `axis`; negative bounds count from the end.
Result<Tensor> Slice(const Tensor& input, int64_t axis, int64_t begin, int64_t end);

// The inputs joined along `axis`; all other dims must be equal.
Result<Tensor> Concat(const std::vector<const Tensor*>& inputs, int64_t axis);

// Appends the rows (dim 0) of `input` to `window`, dropping its oldest rows
// so that it keeps its row count. The other dims must be equal.
Status PushWindow(Tensor& window, const Tensor& input);

// A tensor of `shape` with every element `value`.
Result<Tensor> Filled(DataType datatype, const Shape& shape, double value);

// Element `index` of a computable tensor, as a double.
double ElementAsDouble(const Tensor& tensor, size_t index);

}  // namespace perch::pipeline
