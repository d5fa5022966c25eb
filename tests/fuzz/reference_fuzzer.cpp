// Model references and the OCI name grammar (store/reference.h): what the CLI,
// the agent's --model flag and the fleet's desired state hand to a registry.
#include <cstddef>
#include <cstdint>

#include "fuzz_input.h"
#include "store/reference.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text = perch::fuzz::AsText(data, size);
  (void)perch::IsValidRepositoryName(text);
  (void)perch::IsValidTag(text);
  (void)perch::IsValidRegistryHost(text);
  const auto reference = perch::Reference::Parse(text);
  if (reference.ok()) {
    // A parsed reference prints as one that parses to the same parts.
    const auto again = perch::Reference::Parse(reference->ToString());
    if (!again.ok() || again->registry != reference->registry ||
        again->repository != reference->repository || again->tag != reference->tag ||
        again->digest != reference->digest) {
      __builtin_trap();
    }
  }
  return 0;
}
