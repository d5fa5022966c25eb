// Manifests: GET / HEAD / PUT / DELETE of /v2/<name>/manifests/<reference>.
#include <fmt/format.h>

#include "store/reference.h"
#include "store/registry_http_internal.h"

namespace perch::registry_http {
namespace {

// Checks a tag-or-digest reference; answers 400 and returns false when invalid.
bool CheckReference(http::Response& response, std::string_view reference) {
  if (reference.find(':') != std::string_view::npos) {
    return CheckDigest(response, reference).has_value();
  }
  if (!IsValidTag(reference)) {
    SendError(response, 400, OciError::kTagInvalid,
              fmt::format("invalid tag '{}': [A-Za-z0-9_][A-Za-z0-9._-]{{0,127}}",
                          reference.substr(0, 128)));
    return false;
  }
  return true;
}

void GetManifest(const http::Request& request, http::Response& response, Body&,
                 const Context& context) {
  const std::string& name = request.matches[1];
  const std::string& reference = request.matches[2];
  if (!CheckName(response, name)) {
    return;
  }
  // No manifest can exist under a malformed tag, so reading one is "unknown"
  // (404), as the OCI conformance suite expects; only a push under it is
  // the client's mistake (400 TAG_INVALID).
  if (reference.find(':') == std::string::npos && !IsValidTag(reference)) {
    SendError(response, 404, OciError::kManifestUnknown,
              fmt::format("no manifest '{}': it is not a valid tag, "
                          "[A-Za-z0-9_][A-Za-z0-9._-]{{0,127}}",
                          std::string_view(reference).substr(0, 128)));
    return;
  }
  if (!CheckReference(response, reference)) {
    return;
  }
  auto manifest = context.registry.GetManifest(name, reference);
  if (!manifest.ok()) {
    SendStatus(response, manifest.status(), OciError::kManifestUnknown, OciError::kManifestInvalid);
    return;
  }
  response.status = 200;
  response.headers.Set("Docker-Content-Digest", manifest->digest.str());
  response.headers.Set("ETag", fmt::format("\"{}\"", manifest->digest.str()));
  response.SetBody(std::move(manifest->bytes), manifest->media_type);
}

// The body arrives whole: the server refused a declared length over the
// manifest limit before reading it, and counted what came.
void PutManifest(const http::Request& request, http::Response& response, Body&,
                 const Context& context) {
  const std::string& name = request.matches[1];
  const std::string& reference = request.matches[2];
  if (!CheckName(response, name) || !CheckReference(response, reference)) {
    return;
  }
  const std::string& bytes = request.body;
  if (reference.find(':') != std::string::npos && Sha256Of(bytes).str() != reference) {
    SendError(response, 400, OciError::kDigestInvalid,
              fmt::format("the manifest was pushed as {} but its bytes have digest {}", reference,
                          Sha256Of(bytes).str()));
    return;
  }
  auto pushed =
      context.registry.PutManifest(name, reference, request.headers.Value("Content-Type"), bytes);
  if (!pushed.ok()) {
    if (pushed.status().code() == StatusCode::kNotFound) {
      // A missing blob is the client's mistake in this request, hence 400.
      SendError(response, 400, OciError::kManifestBlobUnknown, pushed.status().message());
    } else {
      SendStatus(response, pushed.status(), OciError::kManifestBlobUnknown,
                 OciError::kManifestInvalid);
    }
    return;
  }
  response.status = 201;
  response.headers.Set("Location", fmt::format("/v2/{}/manifests/{}", name, pushed->digest.str()));
  response.headers.Set("Docker-Content-Digest", pushed->digest.str());
  if (pushed->subject) {
    response.headers.Set("OCI-Subject", pushed->subject->str());
  }
}

void DeleteManifest(const http::Request& request, http::Response& response, Body&,
                    const Context& context) {
  const std::string& name = request.matches[1];
  const std::string& reference = request.matches[2];
  if (!CheckName(response, name) || !CheckReference(response, reference)) {
    return;
  }
  const Status deleted = context.registry.DeleteManifest(name, reference);
  if (!deleted.ok()) {
    SendStatus(response, deleted, OciError::kManifestUnknown, OciError::kManifestInvalid);
    return;
  }
  response.status = 202;
}

}  // namespace

void RegisterManifestRoutes(http::Server& server, const std::shared_ptr<const Context>& context) {
  const std::string pattern = "/v2/(.+)/manifests/(.+)";
  Route(server, context, "GET", pattern, AccessKind::kPull, GetManifest);
  Route(server, context, "PUT", pattern, AccessKind::kPush, PutManifest,
        http::RouteOptions{
            .body = http::BodyMode::kBuffered,
            .max_body_bytes = static_cast<size_t>(context->registry.options().max_manifest_bytes)});
  Route(server, context, "DELETE", pattern, AccessKind::kPush, DeleteManifest);
}

}  // namespace perch::registry_http
