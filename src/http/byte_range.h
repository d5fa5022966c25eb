// The single byte range of a Range request header, as the OCI blob routes
// (the hub's registry, an agent serving its peers) answer it.
//
// Threading: pure functions; safe from any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace perch::http {

struct ByteRange {
  uint64_t offset = 0;
  uint64_t length = 0;
};

// One "bytes=a-b", "bytes=a-" or "bytes=-n" range of a `size`-byte body.
// nullopt: the header asks for no single satisfiable range (answer 416).
std::optional<ByteRange> ParseRange(std::string_view header, uint64_t size);

}  // namespace perch::http
