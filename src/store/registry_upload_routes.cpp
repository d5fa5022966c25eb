// Blob uploads: POST (start, monolithic, cross-repository mount), PATCH
// (chunks, streamed to disk), PUT (finish), GET (status) and DELETE (cancel)
// under /v2/<name>/blobs/uploads/.
#include <fmt/format.h>

#include <charconv>

#include "store/registry_http_internal.h"

namespace perch::registry_http {
namespace {

// After an upload fails mid-body, this much more is read and discarded so
// that the client, still sending, gets the answer rather than a reset.
constexpr size_t kDiscardAfterFailure = size_t{16} << 20;

std::string UploadLocation(std::string_view name, std::string_view id) {
  return fmt::format("/v2/{}/blobs/uploads/{}", name, id);
}

void SetUploadHeaders(http::Response& response, std::string_view name, std::string_view id,
                      uint64_t size) {
  response.headers.Set("Location", UploadLocation(name, id));
  response.headers.Set("Range", fmt::format("0-{}", size == 0 ? 0 : size - 1));
  response.headers.Set("Docker-Upload-UUID", std::string(id));
}

void SetBlobCreated(http::Response& response, std::string_view name, const Digest& digest) {
  response.status = 201;
  response.headers.Set("Location", fmt::format("/v2/{}/blobs/{}", name, digest.str()));
  response.headers.Set("Docker-Content-Digest", digest.str());
}

bool ParseNumber(std::string_view text, uint64_t& value) {
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  return !text.empty() && error == std::errc() && end == text.data() + text.size();
}

// Checks a chunk's Content-Range ("<start>-<end>", as the spec writes it;
// "bytes <start>-<end>/<total>" is accepted too) against what the upload
// already holds. Answers 416 or 400 and returns false when it does not fit.
bool CheckContentRange(const http::Request& request, const Body& body, http::Response& response,
                       std::string_view name, const BlobUpload& upload) {
  const auto header = request.headers.Get("Content-Range");
  if (!header) {
    return true;
  }
  std::string_view value = *header;
  const std::string shown(value.substr(0, 100));
  if (value.substr(0, 6) == "bytes ") {
    value.remove_prefix(6);
  }
  value = value.substr(0, value.find('/'));
  const size_t dash = value.find('-');
  uint64_t start = 0;
  uint64_t end = 0;
  if (dash == std::string_view::npos || !ParseNumber(value.substr(0, dash), start) ||
      !ParseNumber(value.substr(dash + 1), end) || end < start) {
    SendError(response, 400, OciError::kBlobUploadInvalid,
              fmt::format("Content-Range '{}' is not <start>-<end>", shown));
    return false;
  }
  if (start != upload.size()) {
    SendError(response, 416, OciError::kBlobUploadInvalid,
              fmt::format("the chunk starts at byte {} but the upload holds {} bytes: chunks "
                          "must arrive in order",
                          start, upload.size()));
    SetUploadHeaders(response, name, upload.id(), upload.size());
    return false;
  }
  if (const auto length = body.declared_length(); length && *length != end - start + 1) {
    SendError(response, 400, OciError::kBlobUploadInvalid,
              fmt::format("Content-Range '{}' announces {} bytes but Content-Length is {}", shown,
                          end - start + 1, *length));
    return false;
  }
  return true;
}

// Streams the request body into the upload. Answers the error and returns
// false when the upload failed (too large: cancelled) or the body broke
// off (the bytes that arrived are kept, so that the client can resume).
bool Receive(BlobUpload& upload, Body& body, http::Response& response) {
  Status appended;
  size_t discarded = 0;
  const bool complete = body.Read([&](std::string_view piece) {
    if (appended.ok()) {
      appended = upload.Append(piece);
      return true;
    }
    discarded += piece.size();
    return discarded <= kDiscardAfterFailure;
  });
  if (!appended.ok()) {
    SendStatus(response, appended, OciError::kBlobUploadUnknown, OciError::kBlobUploadInvalid);
    response.close = response.close || !complete;
    return false;
  }
  if (!complete) {
    SendError(response, 400, OciError::kBlobUploadInvalid,
              fmt::format("the request body broke off after {} bytes of the upload; GET the "
                          "upload for its Range and send the rest",
                          upload.size()));
    response.close = true;
    return false;
  }
  return true;
}

void SendUploadStatus(http::Response& response, const Status& status) {
  SendStatus(response, status, OciError::kBlobUploadUnknown, OciError::kNameInvalid);
}

void StartUpload(const http::Request& request, http::Response& response, Body& body,
                 const Context& context) {
  const std::string& name = request.matches[1];
  if (!CheckName(response, name)) {
    return;
  }
  Registry& registry = context.registry;
  if (const auto mount = request.param("mount")) {
    const auto digest = CheckDigest(response, *mount);
    if (!digest) {
      return;
    }
    const std::string from(request.param("from").value_or(""));
    if (!from.empty()) {
      if (!CheckName(response, from)) {
        return;
      }
      const Status mounted = registry.MountBlob(name, *digest, from);
      if (mounted.ok()) {
        SetBlobCreated(response, name, *digest);
        return;
      }
      if (mounted.code() != StatusCode::kNotFound) {
        SendStatus(response, mounted, OciError::kBlobUnknown, OciError::kNameInvalid);
        return;
      }
    }
    // Not mountable: the spec says to fall back to an ordinary upload.
  }
  std::optional<Digest> digest;
  if (const auto wanted = request.param("digest")) {
    digest = CheckDigest(response, *wanted);
    if (!digest) {
      return;
    }
  }
  auto id = registry.StartUpload(name);
  if (!id.ok()) {
    SendUploadStatus(response, id.status());
    return;
  }
  if (!digest) {
    response.status = 202;
    SetUploadHeaders(response, name, *id, 0);
    return;
  }
  // Monolithic: the whole blob is this request's body.
  bool committed = false;
  {
    auto upload = registry.OpenUpload(name, *id);
    if (!upload.ok()) {
      SendUploadStatus(response, upload.status());
      return;
    }
    if (Receive(**upload, body, response)) {
      auto stored = (*upload)->Commit(*digest);
      if (stored.ok()) {
        SetBlobCreated(response, name, *stored);
        committed = true;
      } else {
        SendStatus(response, stored.status(), OciError::kBlobUploadUnknown,
                   OciError::kDigestInvalid);
      }
    }
  }
  if (!committed) {
    (void)registry.CancelUpload(name, *id);  // a one-request upload has no later request
  }
}

void ContinueUpload(const http::Request& request, http::Response& response, Body& body,
                    const Context& context, bool finish) {
  const std::string& name = request.matches[1];
  const std::string& id = request.matches[2];
  if (!CheckName(response, name)) {
    return;
  }
  std::optional<Digest> digest;
  if (finish) {
    const auto wanted = request.param("digest");
    if (!wanted) {
      SendError(response, 400, OciError::kDigestInvalid,
                "the PUT that finishes an upload needs ?digest=sha256:<hex>");
      return;
    }
    digest = CheckDigest(response, *wanted);
    if (!digest) {
      return;
    }
  }
  auto upload = context.registry.OpenUpload(name, id);
  if (!upload.ok()) {
    SendUploadStatus(response, upload.status());
    return;
  }
  if (!CheckContentRange(request, body, response, name, **upload) ||
      !Receive(**upload, body, response)) {
    return;
  }
  if (!finish) {
    response.status = 202;
    SetUploadHeaders(response, name, id, (*upload)->size());
    return;
  }
  auto stored = (*upload)->Commit(*digest);
  if (!stored.ok()) {
    SendStatus(response, stored.status(), OciError::kBlobUploadUnknown, OciError::kDigestInvalid);
    return;
  }
  SetBlobCreated(response, name, *stored);
}

void PatchUpload(const http::Request& request, http::Response& response, Body& body,
                 const Context& context) {
  ContinueUpload(request, response, body, context, /*finish=*/false);
}

void FinishUpload(const http::Request& request, http::Response& response, Body& body,
                  const Context& context) {
  ContinueUpload(request, response, body, context, /*finish=*/true);
}

void UploadStatus(const http::Request& request, http::Response& response, Body&,
                  const Context& context) {
  const std::string& name = request.matches[1];
  const std::string& id = request.matches[2];
  if (!CheckName(response, name)) {
    return;
  }
  auto size = context.registry.UploadSize(name, id);
  if (!size.ok()) {
    SendUploadStatus(response, size.status());
    return;
  }
  response.status = 204;
  SetUploadHeaders(response, name, id, *size);
}

void CancelUpload(const http::Request& request, http::Response& response, Body&,
                  const Context& context) {
  const std::string& name = request.matches[1];
  if (!CheckName(response, name)) {
    return;
  }
  const Status cancelled = context.registry.CancelUpload(name, request.matches[2]);
  if (!cancelled.ok()) {
    SendUploadStatus(response, cancelled);
    return;
  }
  response.status = 204;
}

}  // namespace

void RegisterUploadRoutes(http::Server& server, const std::shared_ptr<const Context>& context) {
  const std::string one = "/v2/(.+)/blobs/uploads/(.+)";
  // Bodies stream to disk as they arrive; a declared length past the largest
  // blob is refused before any of it is read.
  const http::RouteOptions streamed{
      .body = http::BodyMode::kStreamed,
      .max_body_bytes = static_cast<size_t>(context->registry.options().max_blob_bytes)};
  Route(server, context, "POST", "/v2/(.+)/blobs/uploads/?", AccessKind::kPush, StartUpload,
        streamed);
  Route(server, context, "PATCH", one, AccessKind::kPush, PatchUpload, streamed);
  Route(server, context, "PUT", one, AccessKind::kPush, FinishUpload, streamed);
  Route(server, context, "GET", one, AccessKind::kPush, UploadStatus);
  Route(server, context, "DELETE", one, AccessKind::kPush, CancelUpload);
}

}  // namespace perch::registry_http
