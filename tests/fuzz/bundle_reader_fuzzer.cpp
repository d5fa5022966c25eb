// A location bundle as `perch bundle import` reads it (bundle/bundle_reader.h
// and bundle_format.h): the tar stream with libarchive, entry names, link and
// special-file refusal, declared sizes, and then oci-layout, index.json and
// the location state. Input: the first byte picks the target (even: the tar,
// odd: a location state's JSON), the rest is its bytes.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>

#include "bundle/bundle_format.h"
#include "bundle/bundle_reader.h"
#include "fuzz_input.h"

namespace {

// One blob store for the whole run, in a folder of this process's own.
perch::BlobStore& Store() {
  static const std::unique_ptr<perch::BlobStore> store = [] {
    const auto root = std::filesystem::temp_directory_path() /
                      ("perch-bundle-fuzz-" + std::to_string(::getpid()));
    return std::move(perch::BlobStore::Open(root)).value();
  }();
  return *store;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) {
    return 0;
  }
  const std::string_view bytes = perch::fuzz::AsText(data + 1, size - 1);
  if (data[0] % 2 == 0) {
    // Small limits, so a fuzzed header cannot make the harness write much.
    const perch::bundle::ReaderLimits limits{.max_blob_bytes = 1 << 20, .max_entries = 64};
    const auto contents = perch::bundle::ReadBundleMemory(bytes, Store(), limits);
    if (contents.ok()) {
      (void)perch::bundle::CheckLayoutFile(contents->layout);
      (void)perch::bundle::ParseBundleIndex(contents->index);
    }
  } else {
    const auto state = perch::bundle::DecodeLocationState(bytes);
    if (state.ok()) {
      // What decodes must encode and decode to the same generation and models.
      const auto again =
          perch::bundle::DecodeLocationState(perch::bundle::EncodeLocationState(*state));
      if (!again.ok() || again->generation != state->generation ||
          again->models.size() != state->models.size()) {
        __builtin_trap();
      }
    }
  }
  return 0;
}
