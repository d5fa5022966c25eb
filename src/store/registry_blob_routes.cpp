// Blobs: HEAD / GET (with Range) and DELETE of /v2/<name>/blobs/<digest>.
#include <fmt/format.h>

#include <memory>

#include "http/byte_range.h"
#include "store/registry_http_internal.h"

namespace perch::registry_http {
namespace {

void ServeBlob(const http::Request& request, http::Response& response, Body&,
               const Context& context) {
  const std::string& name = request.matches[1];
  if (!CheckName(response, name)) {
    return;
  }
  const auto digest = CheckDigest(response, request.match(2));
  if (!digest) {
    return;
  }
  auto blob = context.registry.StatBlob(name, *digest);
  if (!blob.ok()) {
    SendStatus(response, blob.status(), OciError::kBlobUnknown, OciError::kNameInvalid);
    return;
  }
  response.headers.Set("Docker-Content-Digest", digest->str());
  response.headers.Set("ETag", fmt::format("\"{}\"", digest->str()));
  if (const Status answered = http::AnswerFileRange(request, response, blob->path, blob->size);
      !answered.ok()) {
    if (answered.code() == StatusCode::kInvalidArgument) {
      SendError(response, 416, OciError::kSizeInvalid, answered.message());
    } else {
      SendError(response, 500, OciError::kUnknown, answered.message());
    }
  }
}

void DeleteBlob(const http::Request& request, http::Response& response, Body&,
                const Context& context) {
  const std::string& name = request.matches[1];
  if (!CheckName(response, name)) {
    return;
  }
  const auto digest = CheckDigest(response, request.match(2));
  if (!digest) {
    return;
  }
  const Status deleted = context.registry.DeleteBlob(name, *digest);
  if (!deleted.ok()) {
    SendStatus(response, deleted, OciError::kBlobUnknown, OciError::kNameInvalid);
    return;
  }
  response.status = 202;
  response.headers.Set("Docker-Content-Digest", digest->str());
}

}  // namespace

void RegisterBlobRoutes(http::Server& server, const std::shared_ptr<const Context>& context) {
  const std::string pattern = "/v2/(.+)/blobs/(.+)";
  Route(server, context, "GET", pattern, AccessKind::kPull, ServeBlob);
  Route(server, context, "DELETE", pattern, AccessKind::kPush, DeleteBlob);
}

}  // namespace perch::registry_http
