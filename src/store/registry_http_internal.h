// Internal to the registry's HTTP routes: what the route files share. Not a
// public header (it includes the HTTP library).
#pragma once

#include <httplib.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/log.h"
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

void SendError(httplib::Response& response, int http_status, OciError error,
               std::string_view message);

// Maps a Registry Status to an answer: NotFound -> 404 `not_found`,
// InvalidArgument -> 400 `invalid`, ResourceExhausted -> 413 SIZE_INVALID,
// Unavailable -> 503, anything else -> 500.
void SendStatus(httplib::Response& response, const Status& status, OciError not_found,
                OciError invalid);

// A request body, read at most once, piece by piece, straight from the socket.
class Body {
 public:
  explicit Body(const httplib::ContentReader* reader) : reader_(reader) {}

  // Hands each piece to `sink` until the body ends (true) or reading stops
  // early (false): the client went away, or `sink` returned false.
  bool Read(const std::function<bool(std::string_view)>& sink);
  // Reads a whole small body; false when it exceeds `limit` bytes or breaks.
  bool ReadAll(size_t limit, std::string& out, bool& too_large);
  // Reads and discards what nobody read, so that a keep-alive connection
  // stays in step; gives up (and asks to close the connection) past a bound.
  void Drain(httplib::Response& response);

 private:
  const httplib::ContentReader* reader_;
  bool used_ = false;
};

using Handler =
    std::function<void(const httplib::Request&, httplib::Response&, Body&, const Context&)>;

// Registers `handler` for `method` ("GET" also answers HEAD) on `pattern`,
// inside the authorisation check for `access` and one catch-all that
// answers 500 for anything thrown.
void Route(httplib::Server& server, const std::shared_ptr<const Context>& context,
           std::string_view method, const std::string& pattern, AccessKind access, Handler handler);

// Checks of path parameters, answering 400 with the right code when invalid.
bool CheckName(httplib::Response& response, std::string_view name);
std::optional<Digest> CheckDigest(httplib::Response& response, std::string_view text);

void RegisterBlobRoutes(httplib::Server& server, const std::shared_ptr<const Context>& context);
void RegisterUploadRoutes(httplib::Server& server, const std::shared_ptr<const Context>& context);
void RegisterManifestRoutes(httplib::Server& server, const std::shared_ptr<const Context>& context);
void RegisterListRoutes(httplib::Server& server, const std::shared_ptr<const Context>& context);

}  // namespace perch::registry_http
