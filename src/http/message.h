// What a handler sees of an HTTP exchange: perch's own request and response
// types, so that no HTTP library type leaves src/http/.
//
// Threading: a Request and its Response belong to the one handler call that
// receives them.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/status.h"

namespace perch::http {

// Header fields with case-insensitive names. Set replaces, Add appends (for
// fields that may repeat, such as Link or WWW-Authenticate).
class Headers {
 public:
  // The first value of `name`, nullopt when absent.
  std::optional<std::string_view> Get(std::string_view name) const;
  // The first value of `name`, empty when absent.
  std::string Value(std::string_view name) const;
  bool Has(std::string_view name) const { return Get(name).has_value(); }
  void Set(std::string_view name, std::string value);
  void Add(std::string_view name, std::string value);
  void Remove(std::string_view name);
  const std::vector<std::pair<std::string, std::string>>& fields() const { return fields_; }

 private:
  std::vector<std::pair<std::string, std::string>> fields_;
};

// A request body that arrives in pieces (routes registered with
// BodyMode::kStreamed). Called from the handler's thread only.
class BodyStream {
 public:
  virtual ~BodyStream() = default;
  // The next piece, valid until the next call; an empty piece at the end.
  // Unavailable when the client went away or sent nothing within the body
  // deadline (the bytes returned before stay valid for the handler's use).
  virtual Result<std::string_view> Next() = 0;
  // How many body bytes the client declared (Content-Length); nullopt for
  // a chunked body.
  virtual std::optional<uint64_t> declared_length() const = 0;
};

struct Request {
  std::string method;  // "GET", "POST", ...; a HEAD is routed to GET handlers with method "HEAD"
  std::string target;  // as sent: path and query, percent-encoded
  std::string path;    // the path, percent-decoded
  std::map<std::string, std::string> query;  // decoded; the last value of a repeated key wins
  std::vector<std::string> matches;          // [0] the whole path, [1..] the route's groups
  Headers headers;
  // BodyMode::kBuffered: the whole body, decompressed (gzip, deflate, br),
  // at most the route's limit after decompression.
  std::string body;
  // BodyMode::kStreamed: the body as it arrives (raw, not decompressed).
  BodyStream* stream = nullptr;
  std::string remote_address;  // "ip:port" of the client
  bool tls = false;

  std::string_view match(size_t index) const {
    return index < matches.size() ? std::string_view(matches[index]) : std::string_view();
  }
  std::optional<std::string_view> param(std::string_view key) const;
};

// A response body produced piece by piece (large blobs), of a length known
// up front. `read` fills `buffer` with up to `capacity` bytes starting at
// `offset` (0-based within this body) and returns how many it wrote; 0 or
// an error ends the answer early (the connection is then closed). It runs on
// an I/O thread: it must not block for long (a read from a local file is fine).
struct StreamedContent {
  uint64_t length = 0;
  std::function<Result<size_t>(uint64_t offset, char* buffer, size_t capacity)> read;
};

struct Response {
  int status = 200;
  Headers headers;
  std::string body;
  // When set, the body comes from here instead of `body`.
  std::optional<StreamedContent> content;
  // Close the connection after this answer (the request body was not read
  // to its end, say).
  bool close = false;

  void SetBody(std::string bytes, std::string content_type) {
    body = std::move(bytes);
    headers.Set("Content-Type", std::move(content_type));
  }
};

}  // namespace perch::http
