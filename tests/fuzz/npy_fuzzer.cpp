// NumPy .npy files (tensor/npy.h), as `perch infer` reads them.
#include <cstddef>
#include <cstdint>

#include "fuzz_input.h"
#include "tensor/npy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)perch::DecodeNpy(std::string(perch::fuzz::AsText(data, size)), "input");
  return 0;
}
