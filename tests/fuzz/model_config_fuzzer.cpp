// model.json (models/model_config.h), read from every model folder, including
// the ones pulled from a registry.
#include <cstddef>
#include <cstdint>

#include "fuzz_input.h"
#include "models/model_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto config = perch::ParseModelConfig(perch::fuzz::AsText(data, size));
  if (config.ok()) {
    (void)config->version_policy.Select({1, 2, 3});
  }
  return 0;
}
