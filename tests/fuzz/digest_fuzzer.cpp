// Content digests (store/digest.h), as they arrive in URLs and manifests.
#include <cstddef>
#include <cstdint>

#include "fuzz_input.h"
#include "store/digest.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text = perch::fuzz::AsText(data, size);
  const auto digest = perch::Digest::Parse(text);
  if (digest.ok() && digest->str() != text) {
    __builtin_trap();  // a digest is accepted only in its one canonical spelling
  }
  (void)perch::Sha256Of(text);
  return 0;
}
