// Internal to http/: the parts of HTTP/1.1 the server handles without its
// I/O library: request targets (percent-decoding, the query string) and the
// head of an answer. Not a public header.
//
// Threading: pure functions; safe from any thread.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "core/status.h"
#include "http/message.h"

namespace perch::http {

// Decodes %XX escapes (and '+' as a space when `plus_is_space`). nullopt for
// a malformed escape or a NUL byte, raw or encoded.
std::optional<std::string> PercentDecode(std::string_view text, bool plus_is_space);

// Splits an origin-form target ("/path?a=1&b") into its decoded path and
// query. InvalidArgument, saying what is wrong, otherwise.
Status ParseTarget(std::string_view target, std::string& path,
                   std::map<std::string, std::string>& query);

struct AnswerHead {
  int status = 200;
  std::string_view reason;                 // "OK"
  std::optional<uint64_t> content_length;  // nullopt: no Content-Length (204, 304)
  bool close = false;                      // Connection: close
  bool keep_alive = false;                 // Connection: keep-alive (HTTP/1.0 clients)
  std::string_view server;                 // the Server header, unless the handler set one
};

// The status line and header fields of an answer, ending with the empty
// line. The handler's fields that the server owns (Content-Length,
// Transfer-Encoding, Connection, Date) and fields with a line break in them
// are left out.
std::string SerializeAnswerHead(const Headers& headers, const AnswerHead& head);

}  // namespace perch::http
