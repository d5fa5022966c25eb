// A pipeline's model.json (pipeline/pipeline.h): parsed, ordered and
// checked at load, from every model folder, including pulled ones.
#include <cstddef>
#include <cstdint>

#include "fuzz_input.h"
#include "pipeline/pipeline.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  perch::MetricsRegistry metrics;
  const auto session = perch::LoadPipeline(
      "fuzz", perch::fuzz::AsText(data, size),
      [](std::string_view, std::string_view) -> perch::Result<std::shared_ptr<perch::LoadedModel>> {
        return perch::NotFound("no step models in the fuzzer");
      },
      metrics);
  (void)session;
  return 0;
}
