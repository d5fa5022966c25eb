// Internal to the registry's HTTP routes: what the route files share. Not a
// public header.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/log.h"
#include "http/message.h"
#include "http/server.h"
#include "store/access.h"
#include "store/registry.h"
#include "store/registry_http.h"

namespace perch::registry_http {

// The error codes of the OCI Distribution spec (plus UNKNOWN for 500 and
// UNAVAILABLE for 503, as Distribution answers them).
enum class OciError {
  kBlobUnknown,
  kBlobUploadInvalid,
  kBlobUploadUnknown,
  kDigestInvalid,
  kManifestBlobUnknown,
  kManifestInvalid,
  kManifestUnknown,
  kNameInvalid,
  kNameUnknown,
  kSizeInvalid,
  kTagInvalid,
  kUnauthorized,
  kDenied,
  kUnsupported,
  kTooManyRequests,
  kPaginationNumberInvalid,
  kUnavailable,
  kUnknown,
};

std::string_view ToString(OciError error);
std::optional<OciError> OciErrorFromString(std::string_view name);

struct Context {
  Registry& registry;
  const RegistryHttpOptions options;
  const Logger logger;
};

void SendError(http::Response& response, int http_status, OciError error, std::string_view message);

// Maps a Registry Status to an answer: NotFound -> 404 `not_found`,
// InvalidArgument -> 400 `invalid`, ResourceExhausted -> 413 SIZE_INVALID,
// Unavailable -> 503, anything else -> 500.
void SendStatus(http::Response& response, const Status& status, OciError not_found,
                OciError invalid);

// The body of a streamed request, read at most once, piece by piece, as it
// arrives. A request of a buffered route, or one without a body, reads as empty.
class Body {
 public:
  explicit Body(http::BodyStream* stream) : stream_(stream) {}

  // Hands each piece to `sink` until the body ends (true) or reading stops
  // early (false): the client went away or stalled, or `sink` returned false.
  bool Read(const std::function<bool(std::string_view)>& sink);
  // Reads and discards what nobody read, so that a keep-alive connection
  // stays in step; gives up (and closes the connection) past a bound.
  void Drain(http::Response& response);
  // The length the client declared; nullopt for a chunked body or none.
  std::optional<uint64_t> declared_length() const;

 private:
  http::BodyStream* stream_;
  bool used_ = false;
};

using Handler = std::function<void(const http::Request&, http::Response&, Body&, const Context&)>;

// Registers `handler` for `method` ("GET" also answers HEAD) on `pattern`,
// inside the authorisation check for `access` and one catch-all that
// answers 500 for anything thrown.
void Route(http::Server& server, const std::shared_ptr<const Context>& context,
           std::string_view method, const std::string& pattern, AccessKind access, Handler handler,
           http::RouteOptions route_options = {});

// Checks of path parameters, answering 400 with the right code when invalid.
bool CheckName(http::Response& response, std::string_view name);
std::optional<Digest> CheckDigest(http::Response& response, std::string_view text);

void RegisterBlobRoutes(http::Server& server, const std::shared_ptr<const Context>& context);
void RegisterUploadRoutes(http::Server& server, const std::shared_ptr<const Context>& context);
void RegisterManifestRoutes(http::Server& server, const std::shared_ptr<const Context>& context);
void RegisterListRoutes(http::Server& server, const std::shared_ptr<const Context>& context);

}  // namespace perch::registry_http
