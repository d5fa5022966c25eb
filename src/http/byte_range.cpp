#include "http/byte_range.h"

#include <algorithm>
#include <charconv>

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

}  // namespace perch::http
