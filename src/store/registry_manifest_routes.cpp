// Manifests: GET / HEAD / PUT / DELETE of /v2/<name>/manifests/<reference>.
#include <fmt/format.h>

#include "store/reference.h"
#include "store/registry_http_internal.h"

namespace perch::registry_http {
namespace {

// Checks a tag-or-digest reference; answers 400 and returns false when invalid.
bool CheckReference(httplib::Response& response, std::string_view reference) {
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

void GetManifest(const httplib::Request& request, httplib::Response& response, Body&,
                 const Context& context) {
  const std::string name = request.matches[1];
  const std::string reference = request.matches[2];
  if (!CheckName(response, name) || !CheckReference(response, reference)) {
    return;
  }
  auto manifest = context.registry.GetManifest(name, reference);
  if (!manifest.ok()) {
    SendStatus(response, manifest.status(), OciError::kManifestUnknown, OciError::kManifestInvalid);
    return;
  }
  response.status = 200;
  response.set_header("Docker-Content-Digest", manifest->digest.str());
  response.set_header("ETag", fmt::format("\"{}\"", manifest->digest.str()));
  response.set_content(std::move(manifest->bytes), manifest->media_type);
}

void PutManifest(const httplib::Request& request, httplib::Response& response, Body& body,
                 const Context& context) {
  const std::string name = request.matches[1];
  const std::string reference = request.matches[2];
  if (!CheckName(response, name) || !CheckReference(response, reference)) {
    return;
  }
  const uint64_t limit = context.registry.options().max_manifest_bytes;
  if (request.has_header("Content-Length") &&
      request.get_header_value<uint64_t>("Content-Length") > limit) {
    SendError(response, 413, OciError::kSizeInvalid,
              fmt::format("the manifest is larger than this hub's limit of {} bytes", limit));
    return;
  }
  std::string bytes;
  bool too_large = false;
  if (!body.ReadAll(limit, bytes, too_large)) {
    if (too_large) {
      SendError(response, 413, OciError::kSizeInvalid,
                fmt::format("the manifest is larger than this hub's limit of {} bytes", limit));
    } else {
      SendError(response, 400, OciError::kManifestInvalid, "the manifest body broke off");
    }
    response.set_header("Connection", "close");
    return;
  }
  if (reference.find(':') != std::string::npos && Sha256Of(bytes).str() != reference) {
    SendError(response, 400, OciError::kDigestInvalid,
              fmt::format("the manifest was pushed as {} but its bytes have digest {}", reference,
                          Sha256Of(bytes).str()));
    return;
  }
  auto pushed = context.registry.PutManifest(name, reference,
                                             request.get_header_value("Content-Type"), bytes);
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
  response.set_header("Location", fmt::format("/v2/{}/manifests/{}", name, pushed->digest.str()));
  response.set_header("Docker-Content-Digest", pushed->digest.str());
  if (pushed->subject) {
    response.set_header("OCI-Subject", pushed->subject->str());
  }
}

void DeleteManifest(const httplib::Request& request, httplib::Response& response, Body&,
                    const Context& context) {
  const std::string name = request.matches[1];
  const std::string reference = request.matches[2];
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

void RegisterManifestRoutes(httplib::Server& server,
                            const std::shared_ptr<const Context>& context) {
  const std::string pattern = "/v2/(.+)/manifests/(.+)";
  Route(server, context, "GET", pattern, AccessKind::kPull, GetManifest);
  Route(server, context, "PUT", pattern, AccessKind::kPush, PutManifest);
  Route(server, context, "DELETE", pattern, AccessKind::kPush, DeleteManifest);
}

}  // namespace perch::registry_http
