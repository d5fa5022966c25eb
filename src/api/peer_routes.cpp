// Network local, the peer-only routes (the location's peer token, nothing
// else): who this agent is and what it holds (`GET /perch/v1/peer`), and
// its verified blobs in the OCI blob form, read-only, with Range.
#include <fmt/format.h>

#include <algorithm>

#include "api/http_context.h"
#include "api/peer_auth.h"
#include "http/byte_range.h"
#include "http/credentials.h"
#include "http/errors.h"
#include "peers/peer_json.h"
#include "store/blob_sources.h"
#include "store/blob_store.h"
#include "store/registry_client.h"

namespace perch::api {
namespace {

// A partial download touched this recently is one in progress: a peer
// asking for the blob is told to wait for it rather than go to the registry.
constexpr std::chrono::seconds kPendingFor{5};

// OCI repository names; the blob is found by digest whatever the name.
constexpr const char* kBlobPath =
    R"(/v2/([a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*)/blobs/([^/]+))";

void HandlePeer(const Context& context, http::Response& response) {
  Peer self = context.peers->Self();
  for (const auto& model : context.models.ServedModels()) {
    self.models.push_back(model->name());
  }
  std::sort(self.models.begin(), self.models.end());
  self.models.erase(std::unique(self.models.begin(), self.models.end()), self.models.end());
  if (context.blobs != nullptr) {
    if (auto held = context.blobs->List(); held.ok()) {
      for (const BlobInfo& blob : *held) {
        self.blobs.push_back(blob.digest.str());
      }
    }
  }
  http::SetJson(response, 200, EncodePeer(self));
}

void SetPendingHeader(const BlobStore& blobs, const Digest& digest, http::Response& response) {
  const std::string name = BlobWriterName(digest);
  if (!blobs.HasWrite(name)) {
    return;
  }
  const auto stale = blobs.StaleWrites(kPendingFor);
  if (std::find(stale.begin(), stale.end(), name) == stale.end()) {
    response.headers.Set(kBlobPendingHeader, std::to_string(blobs.WrittenSize(name)));
  }
}

void HandleBlob(const Context& context, const http::Request& request, http::Response& response) {
  const auto digest = Digest::Parse(request.match(2));
  if (!digest.ok()) {
    http::SetError(response, digest.status());
    return;
  }
  const auto size = context.blobs != nullptr ? context.blobs->Size(*digest)
                                             : Result<uint64_t>(NotFound("no blob store"));
  if (!size.ok()) {
    if (context.blobs != nullptr) {
      SetPendingHeader(*context.blobs, *digest, response);
    }
    http::SetError(response,
                   NotFound(fmt::format("this agent holds no verified blob {}", digest->str())));
    return;
  }
  response.headers.Set("Docker-Content-Digest", digest->str());
  if (const Status answered =
          http::AnswerFileRange(request, response, context.blobs->PathOf(*digest), *size);
      !answered.ok()) {
    response.content.reset();
    http::SetJson(response, answered.code() == StatusCode::kInvalidArgument ? 416 : 500,
                  http::ErrorJson(answered));
  }
}

}  // namespace

http::Handler WithApiToken(const Context& context, http::Handler handler) {
  if (context.options.api_token.empty()) {
    return handler;
  }
  return
      [&context, handler = std::move(handler)](http::Request& request, http::Response& response) {
        if (const Status allowed = RequireApiOrPeerToken(request, context.options.api_token,
                                                         context.options.peer_token, context.peers);
            !allowed.ok()) {
          http::SetError(response, allowed);
          response.headers.Set("WWW-Authenticate", http::BearerChallenge("perch"));
          return;
        }
        handler(request, response);
      };
}

http::Handler WithPeerToken(const Context& context, http::Handler handler) {
  return [&context, handler = std::move(handler)](http::Request& request,
                                                  http::Response& response) {
    if (const Status allowed = RequirePeerToken(request, context.options.peer_token, context.peers);
        !allowed.ok()) {
      http::SetError(response, allowed);
      response.headers.Set("WWW-Authenticate", http::BearerChallenge("perch-peers"));
      return;
    }
    handler(request, response);
  };
}

void RegisterPeerRoutes(http::Server& server, const Context& context) {
  if (context.peers == nullptr) {
    return;
  }
  server.Route("GET", "/perch/v1/peer",
               WithPeerToken(context, [&context](http::Request&, http::Response& response) {
                 HandlePeer(context, response);
               }));
  server.Route("GET", kBlobPath,
               WithPeerToken(context, [&context](http::Request& request, http::Response& response) {
                 HandleBlob(context, request, response);
               }));
}

}  // namespace perch::api
