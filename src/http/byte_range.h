// The single byte range of a Range request header, as the OCI blob routes
// (the hub's registry, an agent serving its peers) answer it.
//
// Threading: pure functions; safe from any thread.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string_view>

#include "core/status.h"
#include "http/message.h"

namespace perch::http {

struct ByteRange {
  uint64_t offset = 0;
  uint64_t length = 0;
};

// One "bytes=a-b", "bytes=a-" or "bytes=-n" range of a `size`-byte body.
// nullopt: the header asks for no single satisfiable range (answer 416).
std::optional<ByteRange> ParseRange(std::string_view header, uint64_t size);

// Answers a GET or HEAD of the `size`-byte file at `path` (a verified blob):
// all of it (200), or the one range the request's Range header asks for
// (206 with Content-Range), streamed from a descriptor opened now, so that
// a file removed while the answer streams stays readable. Sets
// Accept-Ranges and Content-Type: application/octet-stream; the caller adds
// the digest headers. The errors are the caller's to phrase in its API's
// error format: InvalidArgument for a range it cannot satisfy (Content-Range:
// bytes */SIZE is set: answer 416), Internal when the file cannot be opened.
Status AnswerFileRange(const Request& request, Response& response,
                       const std::filesystem::path& path, uint64_t size);

}  // namespace perch::http
