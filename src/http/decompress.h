// Internal to http/: the Content-Encodings a buffered request body may
// arrive in (gzip, deflate, br), decoded with a bound on the output so that
// a small compressed body cannot expand past the route's limit. Not a
// public header.
//
// Threading: pure functions; safe from any thread.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "core/status.h"

namespace perch::http {

// Whether every coding in `content_encoding` ("gzip", "br, gzip", "identity")
// is one Decompress decodes.
bool SupportedEncoding(std::string_view content_encoding);

// `body` decoded through each coding of `content_encoding`, last applied
// first. ResourceExhausted once the output would pass `limit` bytes;
// InvalidArgument, naming the coding, for data that does not decode.
Result<std::string> Decompress(std::string_view content_encoding, std::string body, size_t limit);

}  // namespace perch::http
