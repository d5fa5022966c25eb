// Blobs: HEAD / GET (with Range) and DELETE of /v2/<name>/blobs/<digest>.
#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <vector>

#include "store/registry_http_internal.h"

namespace perch::registry_http {
namespace {

constexpr size_t kReadChunk = 256 << 10;

struct ByteRange {
  uint64_t offset = 0;
  uint64_t length = 0;
};

bool ParseNumber(std::string_view text, uint64_t& value) {
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  return !text.empty() && error == std::errc() && end == text.data() + text.size();
}

// One "bytes=a-b", "bytes=a-" or "bytes=-n" range of a `size`-byte blob.
// nullopt: the header asks for no single satisfiable range.
std::optional<ByteRange> ParseRange(std::string_view header, uint64_t size) {
  constexpr std::string_view kPrefix = "bytes=";
  if (header.substr(0, kPrefix.size()) != kPrefix || header.find(',') != std::string_view::npos) {
    return std::nullopt;
  }
  header.remove_prefix(kPrefix.size());
  const size_t dash = header.find('-');
  if (dash == std::string_view::npos) {
    return std::nullopt;
  }
  const std::string_view first = header.substr(0, dash);
  const std::string_view last = header.substr(dash + 1);
  uint64_t start = 0;
  uint64_t end = 0;
  if (first.empty()) {
    if (!ParseNumber(last, end) || end == 0 || size == 0) {
      return std::nullopt;
    }
    start = end >= size ? 0 : size - end;
    return ByteRange{start, size - start};
  }
  if (!ParseNumber(first, start) || start >= size) {
    return std::nullopt;
  }
  if (last.empty()) {
    end = size - 1;
  } else if (!ParseNumber(last, end) || end < start) {
    return std::nullopt;
  } else if (end >= size) {
    end = size - 1;
  }
  return ByteRange{start, end - start + 1};
}

void ServeBlob(const httplib::Request& request, httplib::Response& response, Body&,
               const Context& context) {
  // The library applies Range itself, without checking it against the
  // content, to every answer (error bodies included). The handler checks
  // and applies it, so the library must not see it again. The Request is the
  // library's own non-const object, handed to handlers as const.
  const_cast<httplib::Request&>(request).ranges.clear();
  const std::string name = request.matches[1];
  if (!CheckName(response, name)) {
    return;
  }
  const auto digest = CheckDigest(response, request.matches[2].str());
  if (!digest) {
    return;
  }
  auto blob = context.registry.StatBlob(name, *digest);
  if (!blob.ok()) {
    SendStatus(response, blob.status(), OciError::kBlobUnknown, OciError::kNameInvalid);
    return;
  }
  ByteRange range{0, blob->size};
  if (request.has_header("Range")) {
    const auto wanted = ParseRange(request.get_header_value("Range"), blob->size);
    if (!wanted) {
      response.set_header("Content-Range", fmt::format("bytes */{}", blob->size));
      SendError(response, 416, OciError::kSizeInvalid,
                fmt::format("range '{}' is not satisfiable for a blob of {} bytes",
                            request.get_header_value("Range").substr(0, 100), blob->size));
      return;
    }
    range = *wanted;
    response.status = 206;
    response.set_header("Content-Range", fmt::format("bytes {}-{}/{}", range.offset,
                                                     range.offset + range.length - 1, blob->size));
  } else {
    response.status = 200;
  }
  response.set_header("Docker-Content-Digest", digest->str());
  response.set_header("ETag", fmt::format("\"{}\"", digest->str()));
  response.set_header("Accept-Ranges", "bytes");
  if (range.length == 0) {
    response.set_content("", "application/octet-stream");
    return;
  }
  if (request.method == "HEAD") {
    // The library sends no body for HEAD, only the length the provider declares.
    response.set_content_provider(range.length, "application/octet-stream",
                                  [](size_t, size_t, httplib::DataSink&) { return false; });
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
  const uint64_t start = range.offset;
  response.set_content_provider(
      range.length, "application/octet-stream",
      [fd, start](size_t offset, size_t length, httplib::DataSink& sink) {
        std::vector<char> buffer(std::min(length, kReadChunk));
        const ssize_t got =
            ::pread(fd, buffer.data(), buffer.size(), static_cast<off_t>(start + offset));
        if (got <= 0) {
          return false;
        }
        return sink.write(buffer.data(), static_cast<size_t>(got));
      },
      [fd](bool) { ::close(fd); });
}

void DeleteBlob(const httplib::Request& request, httplib::Response& response, Body&,
                const Context& context) {
  const std::string name = request.matches[1];
  if (!CheckName(response, name)) {
    return;
  }
  const auto digest = CheckDigest(response, request.matches[2].str());
  if (!digest) {
    return;
  }
  const Status deleted = context.registry.DeleteBlob(name, *digest);
  if (!deleted.ok()) {
    SendStatus(response, deleted, OciError::kBlobUnknown, OciError::kNameInvalid);
    return;
  }
  response.status = 202;
  response.set_header("Docker-Content-Digest", digest->str());
}

}  // namespace

void RegisterBlobRoutes(httplib::Server& server, const std::shared_ptr<const Context>& context) {
  const std::string pattern = "/v2/(.+)/blobs/(.+)";
  Route(server, context, "GET", pattern, AccessKind::kPull, ServeBlob);
  Route(server, context, "DELETE", pattern, AccessKind::kPush, DeleteBlob);
}

}  // namespace perch::registry_http
