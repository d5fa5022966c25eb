// NumPy .npy files (format versions 1, 2 and 3) as tensors.
#pragma once

#include <string>
#include <string_view>

#include "core/status.h"
#include "tensor/tensor.h"

namespace perch {

// Decodes a C-ordered, little-endian .npy file into a tensor named `name`.
// Supported dtypes: bool, int8..int64, uint8..uint64, float16, float32,
// float64, and fixed-width bytes ("S", as BYTES with trailing NULs removed).
// InvalidArgument naming what is wrong for anything else. Taking the file by
// value lets a caller that is done with it hand its bytes over: a numeric
// tensor then keeps the file's buffer instead of a copy.
Result<Tensor> DecodeNpy(std::string file, std::string name);

}  // namespace perch
