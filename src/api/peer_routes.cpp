// Network local, the peer-only routes (the location's peer token, nothing
// else): who this agent is and what it holds (`GET /perch/v1/peer`), and
// its verified blobs in the OCI blob form, read-only, with Range.
#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

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

// Owns the descriptor an answer streams from; closed with the answer.
class OpenBlob {
 public:
  explicit OpenBlob(int fd) : fd_(fd) {}
  ~OpenBlob() { ::close(fd_); }
  OpenBlob(const OpenBlob&) = delete;
  OpenBlob& operator=(const OpenBlob&) = delete;

  Result<size_t> Read(uint64_t offset, char* buffer, size_t capacity) const {
    const ssize_t got = ::pread(fd_, buffer, capacity, static_cast<off_t>(offset));
    if (got < 0) {
      return Unavailable(fmt::format("cannot read the blob: {}", std::strerror(errno)));
    }
    return static_cast<size_t>(got);
  }

 private:
  const int fd_;
};

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
  http::ByteRange range{0, *size};
  if (const auto header = request.headers.Get("Range")) {
    const auto wanted = http::ParseRange(*header, *size);
    if (!wanted) {
      response.headers.Set("Content-Range", fmt::format("bytes */{}", *size));
      http::SetJson(response, 416,
                    http::ErrorJson(InvalidArgument(
                        fmt::format("range '{}' is not satisfiable for a blob of {} bytes",
                                    header->substr(0, 100), *size))));
      return;
    }
    range = *wanted;
    response.status = 206;
    response.headers.Set("Content-Range", fmt::format("bytes {}-{}/{}", range.offset,
                                                      range.offset + range.length - 1, *size));
  } else {
    response.status = 200;
  }
  response.headers.Set("Docker-Content-Digest", digest->str());
  response.headers.Set("Accept-Ranges", "bytes");
  response.headers.Set("Content-Type", "application/octet-stream");
  if (range.length == 0) {
    return;
  }
  // Opened now, so that a blob pruned while the answer streams stays
  // readable through this descriptor.
  const int fd = ::open(context.blobs->PathOf(*digest).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    http::SetError(response, Internal(fmt::format("cannot open blob {}: {}", digest->str(),
                                                  std::strerror(errno))));
    return;
  }
  const auto file = std::make_shared<const OpenBlob>(fd);
  const uint64_t start = range.offset;
  response.content =
      http::StreamedContent{.length = range.length,
                            .read = [file, start](uint64_t offset, char* buffer, size_t capacity) {
                              return file->Read(start + offset, buffer, capacity);
                            }};
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
