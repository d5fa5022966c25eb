// Blobs: HEAD / GET (with Range) and DELETE of /v2/<name>/blobs/<digest>.
#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "http/byte_range.h"
#include "store/registry_http_internal.h"

namespace perch::registry_http {
namespace {

using http::ByteRange;
using http::ParseRange;

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
  ByteRange range{0, blob->size};
  if (const auto header = request.headers.Get("Range")) {
    const auto wanted = ParseRange(*header, blob->size);
    if (!wanted) {
      response.headers.Set("Content-Range", fmt::format("bytes */{}", blob->size));
      SendError(response, 416, OciError::kSizeInvalid,
                fmt::format("range '{}' is not satisfiable for a blob of {} bytes",
                            header->substr(0, 100), blob->size));
      return;
    }
    range = *wanted;
    response.status = 206;
    response.headers.Set("Content-Range", fmt::format("bytes {}-{}/{}", range.offset,
                                                      range.offset + range.length - 1, blob->size));
  } else {
    response.status = 200;
  }
  response.headers.Set("Docker-Content-Digest", digest->str());
  response.headers.Set("ETag", fmt::format("\"{}\"", digest->str()));
  response.headers.Set("Accept-Ranges", "bytes");
  response.headers.Set("Content-Type", "application/octet-stream");
  if (range.length == 0) {
    return;
  }
  // Opened now, so that a blob collected while the answer streams stays
  // readable through this descriptor.
  const int fd = ::open(blob->path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    SendError(response, 500, OciError::kUnknown,
              fmt::format("cannot open blob {}: {}", digest->str(), std::strerror(errno)));
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
