// Dynamic batching: merging the inputs of several requests along dim 0 into
// one batch, and splitting the batch's outputs back per request.
#pragma once

#include <cstdint>
#include <vector>

#include "core/status.h"
#include "tensor/tensor.h"

namespace perch {

// True when `a` and `b` (inputs in the same order) differ only in dim 0.
bool CanMerge(const std::vector<Tensor>& a, const std::vector<Tensor>& b);

// Concatenates each input of `requests` along dim 0. All requests must be
// mergeable (CanMerge) and have rank >= 1.
std::vector<Tensor> MergeBatch(const std::vector<const std::vector<Tensor>*>& requests);

// Splits each output along dim 0 into pieces of `rows[i]` rows, one list of
// outputs per request. Internal when an output's dim 0 is not the batch.
Result<std::vector<std::vector<Tensor>>> SplitBatch(const std::vector<Tensor>& outputs,
                                                    const std::vector<int64_t>& rows);

}  // namespace perch
