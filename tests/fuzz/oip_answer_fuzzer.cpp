// What a process model's own server answers (engine/oip_client_codec.h):
// its infer answers and its model metadata are untrusted input to perch.
#include <cstddef>
#include <cstdint>

#include "engine/oip_client_codec.h"
#include "fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto text = perch::fuzz::AsText(data, size);
  (void)perch::DecodeOipInferResponse(text, {"probabilities", "label"});
  (void)perch::DecodeOipModelMetadata(text);
  return 0;
}
