// A model version's manifest and config blob as a registry client pulls them
// (store/model_artifact.h); the layer paths end up as file names on disk,
// and a pipeline's pinned steps (store/pipeline_artifact.h) references.
// Input: the first byte picks the parser, the rest is its JSON.
#include <cstddef>
#include <cstdint>

#include "fuzz_input.h"
#include "store/manifest.h"
#include "store/model_artifact.h"
#include "store/pipeline_artifact.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) {
    return 0;
  }
  const std::string_view json = perch::fuzz::AsText(data + 1, size - 1);
  if (data[0] % 2 == 0) {
    // No Content-Type: the document's own mediaType (or its shape) decides.
    const auto manifest = perch::ParseManifest("", json);
    if (manifest.ok()) {
      (void)perch::ModelArtifactOf(*manifest);
    }
  } else {
    const auto metadata = perch::DecodeModelConfig(json);
    if (metadata.ok()) {
      // What encodes must decode to an equal name and version.
      const auto again = perch::DecodeModelConfig(perch::EncodeModelConfig(*metadata));
      if (!again.ok() || again->name != metadata->name || again->version != metadata->version) {
        __builtin_trap();
      }
      // A pipeline's pins become references the client fetches.
      const auto pipeline = perch::Reference::Parse("127.0.0.1:5000/ns/pipeline:1");
      (void)perch::PinnedStepsOf(*pipeline, *metadata);
    }
  }
  return 0;
}
