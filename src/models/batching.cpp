#include "models/batching.h"

#include <fmt/format.h>

#include <numeric>

namespace perch {

bool CanMerge(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].name != b[i].name || a[i].datatype != b[i].datatype || a[i].shape.empty() ||
        a[i].shape.size() != b[i].shape.size() ||
        !std::equal(a[i].shape.begin() + 1, a[i].shape.end(), b[i].shape.begin() + 1)) {
      return false;
    }
  }
  return true;
}

std::vector<Tensor> MergeBatch(const std::vector<const std::vector<Tensor>*>& requests) {
  std::vector<Tensor> merged;
  const auto& first = *requests.front();
  for (size_t i = 0; i < first.size(); ++i) {
    Tensor tensor{
        .name = first[i].name, .datatype = first[i].datatype, .shape = first[i].shape, .data = {}};
    tensor.shape[0] = 0;
    size_t bytes = 0;
    for (const auto* request : requests) {
      bytes += (*request)[i].data.size();
    }
    tensor.data.reserve(bytes);
    for (const auto* request : requests) {
      tensor.shape[0] += (*request)[i].shape[0];
      // Row-major data and length-prefixed BYTES both concatenate as they are.
      tensor.data += (*request)[i].data;
    }
    merged.push_back(std::move(tensor));
  }
  return merged;
}

Result<std::vector<std::vector<Tensor>>> SplitBatch(const std::vector<Tensor>& outputs,
                                                    const std::vector<int64_t>& rows) {
  const int64_t total = std::accumulate(rows.begin(), rows.end(), int64_t{0});
  std::vector<std::vector<Tensor>> split(rows.size());
  for (const Tensor& output : outputs) {
    if (output.shape.empty() || output.shape[0] != total) {
      return Internal(fmt::format(
          "output '{}' has shape {}, whose first dim is not the batch of {}: the model cannot be "
          "batched dynamically; remove dynamic_batching from its model.json",
          output.name, ShapeToString(output.shape), total));
    }
    std::vector<std::string_view> elements;
    size_t row_bytes = 0;
    int64_t elements_per_row = 0;
    if (output.datatype == DataType::kBytes) {
      PERCH_ASSIGN_OR_RETURN(elements,
                             SplitBytesElements(output.data, ElementCount(output.shape).value()));
      elements_per_row = total == 0 ? 0 : static_cast<int64_t>(elements.size()) / total;
    } else {
      row_bytes = total == 0 ? 0 : output.data.size() / static_cast<size_t>(total);
    }
    size_t offset = 0;
    size_t element = 0;
    for (size_t r = 0; r < rows.size(); ++r) {
      Tensor piece{
          .name = output.name, .datatype = output.datatype, .shape = output.shape, .data = {}};
      piece.shape[0] = rows[r];
      if (output.datatype == DataType::kBytes) {
        for (int64_t e = 0; e < rows[r] * elements_per_row; ++e) {
          AppendBytesElement(piece.data, elements[element++]);
        }
      } else {
        const size_t bytes = row_bytes * static_cast<size_t>(rows[r]);
        piece.data.assign(output.data, offset, bytes);
        offset += bytes;
      }
      split[r].push_back(std::move(piece));
    }
  }
  return split;
}

}  // namespace perch
