// Finds the external data files an ONNX model names, without ONNX Runtime,
// so a model can be refused before anything outside its folder is opened.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace perch {

// The "location" of every tensor stored as external data in the serialized
// ModelProto `model` (initializers, sparse initializers, attributes, and
// subgraphs at any depth). InvalidArgument if the bytes are not a well-formed
// protobuf message along the walked path.
Result<std::vector<std::string>> ListOnnxExternalDataLocations(std::string_view model);

}  // namespace perch
