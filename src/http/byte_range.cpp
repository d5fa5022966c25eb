#include "http/byte_range.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <memory>

namespace perch::http {
namespace {

bool ParseNumber(std::string_view text, uint64_t& value) {
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  return !text.empty() && error == std::errc() && end == text.data() + text.size();
}

}  // namespace

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
  }
  end = std::min(end, size - 1);
  return ByteRange{start, end - start + 1};
}

namespace {

// Owns the descriptor an answer streams from; closed with the answer.
class OpenFile {
 public:
  explicit OpenFile(int fd) : fd_(fd) {}
  ~OpenFile() { ::close(fd_); }
  OpenFile(const OpenFile&) = delete;
  OpenFile& operator=(const OpenFile&) = delete;

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

}  // namespace

Status AnswerFileRange(const Request& request, Response& response,
                       const std::filesystem::path& path, uint64_t size) {
  ByteRange range{0, size};
  if (const auto header = request.headers.Get("Range")) {
    const auto wanted = ParseRange(*header, size);
    if (!wanted) {
      response.headers.Set("Content-Range", fmt::format("bytes */{}", size));
      return InvalidArgument(fmt::format("range '{}' is not satisfiable for a blob of {} bytes",
                                         header->substr(0, 100), size));
    }
    range = *wanted;
    response.status = 206;
    response.headers.Set("Content-Range", fmt::format("bytes {}-{}/{}", range.offset,
                                                      range.offset + range.length - 1, size));
  } else {
    response.status = 200;
  }
  response.headers.Set("Accept-Ranges", "bytes");
  response.headers.Set("Content-Type", "application/octet-stream");
  if (range.length == 0) {
    return Status::Ok();
  }
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return Internal(fmt::format("cannot open {}: {}", path.string(), std::strerror(errno)));
  }
  const auto file = std::make_shared<const OpenFile>(fd);
  const uint64_t start = range.offset;
  response.content =
      StreamedContent{.length = range.length,
                      .read = [file, start](uint64_t offset, char* buffer, size_t capacity) {
                        return file->Read(start + offset, buffer, capacity);
                      }};
  return Status::Ok();
}

}  // namespace perch::http
