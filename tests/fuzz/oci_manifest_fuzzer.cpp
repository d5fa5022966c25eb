// OCI manifests as the hub's registry receives them (store/manifest.h).
// Input: the request's Content-Type, a newline, then the manifest bytes.
#include <cstddef>
#include <cstdint>

#include "fuzz_input.h"
#include "store/manifest.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input = perch::fuzz::AsText(data, size);
  const std::string_view content_type = perch::fuzz::TakeField(input);
  (void)perch::ParseManifest(content_type, input);
  return 0;
}
