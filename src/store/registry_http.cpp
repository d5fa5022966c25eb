// Shared pieces of the registry's HTTP API: errors, authorisation, body
// reading, the base endpoint and the catch-all.
#include "store/registry_http.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "core/enum_names.h"
#include "store/reference.h"
#include "store/registry_http_internal.h"

namespace perch {
namespace registry_http {
namespace {

constexpr EnumNames<OciError, 18> kOciErrorNames{{
    {OciError::kBlobUnknown, "BLOB_UNKNOWN"},
    {OciError::kBlobUploadInvalid, "BLOB_UPLOAD_INVALID"},
    {OciError::kBlobUploadUnknown, "BLOB_UPLOAD_UNKNOWN"},
    {OciError::kDigestInvalid, "DIGEST_INVALID"},
    {OciError::kManifestBlobUnknown, "MANIFEST_BLOB_UNKNOWN"},
    {OciError::kManifestInvalid, "MANIFEST_INVALID"},
    {OciError::kManifestUnknown, "MANIFEST_UNKNOWN"},
    {OciError::kNameInvalid, "NAME_INVALID"},
    {OciError::kNameUnknown, "NAME_UNKNOWN"},
    {OciError::kSizeInvalid, "SIZE_INVALID"},
    {OciError::kTagInvalid, "TAG_INVALID"},
    {OciError::kUnauthorized, "UNAUTHORIZED"},
    {OciError::kDenied, "DENIED"},
    {OciError::kUnsupported, "UNSUPPORTED"},
    {OciError::kTooManyRequests, "TOOMANYREQUESTS"},
    {OciError::kPaginationNumberInvalid, "PAGINATION_NUMBER_INVALID"},
    {OciError::kUnavailable, "UNAVAILABLE"},
    {OciError::kUnknown, "UNKNOWN"},
}};

// Past this much unread body, a connection is closed rather than drained.
constexpr size_t kMaxDrainBytes = size_t{16} << 20;

constexpr size_t kUnknownEndpointBodyBytes = size_t{64} << 10;

}  // namespace

std::string_view ToString(OciError error) { return EnumToString(kOciErrorNames, error); }
std::optional<OciError> OciErrorFromString(std::string_view name) {
  return EnumFromString(kOciErrorNames, name);
}

void SendError(http::Response& response, int http_status, OciError error,
               std::string_view message) {
  response.status = http_status;
  const nlohmann::json body{
      {"errors", {{{"code", ToString(error)}, {"message", message}, {"detail", nullptr}}}}};
  response.SetBody(body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
                   "application/json");
}

void SendStatus(http::Response& response, const Status& status, OciError not_found,
                OciError invalid) {
  switch (status.code()) {
    case StatusCode::kNotFound:
      SendError(response, 404, not_found, status.message());
      return;
    case StatusCode::kInvalidArgument:
      SendError(response, 400, invalid, status.message());
      return;
    case StatusCode::kResourceExhausted:
      SendError(response, 413, OciError::kSizeInvalid, status.message());
      return;
    case StatusCode::kUnavailable:
      SendError(response, 503, OciError::kUnavailable, status.message());
      return;
    case StatusCode::kUnauthenticated:
      SendError(response, 401, OciError::kUnauthorized, status.message());
      return;
    case StatusCode::kPermissionDenied:
      SendError(response, 403, OciError::kDenied, status.message());
      return;
    default:
      SendError(response, 500, OciError::kUnknown, status.message());
  }
}

bool Body::Read(const std::function<bool(std::string_view)>& sink) {
  if (stream_ == nullptr || used_) {
    return true;
  }
  used_ = true;
  while (true) {
    const Result<std::string_view> piece = stream_->Next();
    if (!piece.ok()) {
      return false;
    }
    if (piece->empty()) {
      return true;
    }
    if (!sink(*piece)) {
      return false;
    }
  }
}

void Body::Drain(http::Response& response) {
  if (stream_ == nullptr || used_) {
    return;
  }
  size_t drained = 0;
  const bool complete = Read([&drained](std::string_view piece) {
    drained += piece.size();
    return drained <= kMaxDrainBytes;
  });
  if (!complete) {
    response.close = true;
  }
}

std::optional<uint64_t> Body::declared_length() const {
  return stream_ == nullptr ? std::nullopt : stream_->declared_length();
}

void Route(http::Server& server, const std::shared_ptr<const Context>& context,
           std::string_view method, const std::string& pattern, AccessKind access, Handler handler,
           http::RouteOptions route_options) {
  auto run = [context, access, handler = std::move(handler)](http::Request& request,
                                                             http::Response& response) {
    response.headers.Set("Docker-Distribution-API-Version", "registry/2.0");
    Body body(request.stream);
    try {
      const Status allowed =
          Authorize(context->options.tokens, request.headers.Value("Authorization"), access);
      if (!allowed.ok()) {
        if (allowed.code() == StatusCode::kPermissionDenied) {
          SendError(response, 403, OciError::kDenied, allowed.message());
        } else {
          response.headers.Set("WWW-Authenticate",
                               fmt::format("Basic realm=\"{}\"", context->options.realm));
          SendError(response, 401, OciError::kUnauthorized, allowed.message());
        }
        // A caller without the right token gets no handler thread to wait
        // on its body with: the connection closes instead.
        response.close = response.close || (request.stream != nullptr &&
                                            body.declared_length() != std::optional<uint64_t>(0));
        return;
      }
      handler(request, response, body, *context);
      body.Drain(response);
    } catch (const std::exception& error) {
      context->logger.Error("{} {} failed: {}", request.method, request.path, error.what());
      SendError(response, 500, OciError::kUnknown, fmt::format("internal error: {}", error.what()));
      response.content.reset();
      response.close = true;
    } catch (...) {
      context->logger.Error("{} {} failed with an unknown exception", request.method, request.path);
      SendError(response, 500, OciError::kUnknown, "internal error");
      response.content.reset();
      response.close = true;
    }
  };
  // The answers the server makes itself (a body over the limit, an encoding
  // it cannot read) in the spec's error shape too.
  route_options.error_answer = [](http::Response& response, int http_status, const Status& error) {
    response.headers.Set("Docker-Distribution-API-Version", "registry/2.0");
    OciError code = OciError::kUnsupported;
    if (http_status == 413) {
      code = OciError::kSizeInvalid;
    } else if (http_status == 503) {
      code = OciError::kUnavailable;
    } else if (http_status >= 500) {
      code = OciError::kUnknown;
    }
    SendError(response, http_status, code, error.message());
  };
  if (context->options.observe) {
    server.Route(
        method, pattern,
        [run = std::move(run), observe = context->options.observe](http::Request& request,
                                                                   http::Response& response) {
          const auto start = std::chrono::steady_clock::now();
          run(request, response);
          observe(request, response,
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
        },
        route_options);
    return;
  }
  server.Route(method, pattern, std::move(run), route_options);
}

bool CheckName(http::Response& response, std::string_view name) {
  if (IsValidRepositoryName(name)) {
    return true;
  }
  SendError(response, 400, OciError::kNameInvalid,
            fmt::format("invalid repository name '{}': lowercase letters and digits in components "
                        "joined by '.', '_', '__' or '-', separated by '/'",
                        name.substr(0, 255)));
  return false;
}

std::optional<Digest> CheckDigest(http::Response& response, std::string_view text) {
  auto digest = Digest::Parse(text);
  if (!digest.ok()) {
    SendError(response, 400, OciError::kDigestInvalid, digest.status().message());
    return std::nullopt;
  }
  return std::move(digest).value();
}

}  // namespace registry_http

void MountRegistryRoutes(http::Server& server, Registry& registry,
                         const RegistryHttpOptions& options, Logger logger) {
  using namespace registry_http;
  const auto context = std::make_shared<const Context>(Context{registry, options, logger});
  // Clients find out how to authenticate from this endpoint, so it always
  // challenges a request without credentials, even when anonymous pulls are
  // allowed: docker-style clients send their credentials only after a challenge.
  Route(server, context, "GET", "/v2/?", AccessKind::kPull,
        [](const http::Request& request, http::Response& response, Body&, const Context& hub) {
          if (!request.headers.Has("Authorization")) {
            response.headers.Set("WWW-Authenticate",
                                 fmt::format("Basic realm=\"{}\"", hub.options.realm));
            SendError(response, 401, OciError::kUnauthorized,
                      "send credentials: Bearer <token>, or Basic with the token as password");
            return;
          }
          response.SetBody("{}", "application/json");
        });
  RegisterListRoutes(server, context);
  RegisterUploadRoutes(server, context);
  RegisterBlobRoutes(server, context);
  RegisterManifestRoutes(server, context);
  const auto unknown = [](const http::Request& request, http::Response& response, Body&,
                          const Context&) {
    SendError(response, 404, OciError::kUnsupported,
              fmt::format("no such registry endpoint: {} {}", request.method,
                          std::string_view(request.path).substr(0, 200)));
  };
  // Nothing is read from these bodies: a small limit keeps them from costing memory.
  const http::RouteOptions small_body{.body = http::BodyMode::kBuffered,
                                      .max_body_bytes = kUnknownEndpointBodyBytes};
  for (const char* method : {"GET", "POST", "PUT", "PATCH", "DELETE"}) {
    Route(server, context, method, "/v2/.*", AccessKind::kPull, unknown, small_body);
  }
}

}  // namespace perch
