#include "http/wire.h"

#include <fmt/format.h>

#include <array>
#include <cctype>
#include <ctime>

namespace perch::http {
namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  return -1;
}

bool SameName(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    const auto x = static_cast<unsigned char>(a[i]);
    const auto y = static_cast<unsigned char>(b[i]);
    if (std::tolower(x) != std::tolower(y)) {
      return false;
    }
  }
  return true;
}

bool ServerOwned(std::string_view name) {
  return SameName(name, "Content-Length") || SameName(name, "Transfer-Encoding") ||
         SameName(name, "Connection") || SameName(name, "Date");
}

bool HasLineBreak(std::string_view text) { return text.find_first_of("\r\n") != text.npos; }

// RFC 9110 section 5.6.7: "Sun, 06 Nov 1994 08:49:37 GMT".
std::string HttpDate() {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  std::array<char, 64> text{};
  const size_t length = std::strftime(text.data(), text.size(), "%a, %d %b %Y %H:%M:%S GMT", &utc);
  return std::string(text.data(), length);
}

}  // namespace

std::optional<std::string> PercentDecode(std::string_view text, bool plus_is_space) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '%') {
      if (i + 2 >= text.size()) {
        return std::nullopt;
      }
      const int high = HexValue(text[i + 1]);
      const int low = HexValue(text[i + 2]);
      if (high < 0 || low < 0 || (high == 0 && low == 0)) {
        return std::nullopt;
      }
      out.push_back(static_cast<char>(high * 16 + low));
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out.push_back(' ');
    } else if (c == '\0') {
      return std::nullopt;  // Beast refuses it in a target; refused here too, not trusted to
    } else {
      out.push_back(c);
    }
  }
  return out;
}

Status ParseTarget(std::string_view target, std::string& path,
                   std::map<std::string, std::string>& query) {
  if (target.empty() || target.front() != '/') {
    return InvalidArgument(fmt::format("the request target '{}' is not a path starting with '/'",
                                       target.substr(0, 200)));
  }
  const size_t question = target.find('?');
  std::optional<std::string> decoded = PercentDecode(target.substr(0, question), false);
  if (!decoded) {
    return InvalidArgument("the request path holds a malformed %-escape or a NUL byte");
  }
  path = std::move(*decoded);
  if (question == target.npos) {
    return Status::Ok();
  }
  std::string_view rest = target.substr(question + 1);
  while (!rest.empty()) {
    const size_t amp = rest.find('&');
    const std::string_view pair = rest.substr(0, amp);
    rest = amp == rest.npos ? std::string_view() : rest.substr(amp + 1);
    if (pair.empty()) {
      continue;
    }
    const size_t equals = pair.find('=');
    std::optional<std::string> key = PercentDecode(pair.substr(0, equals), true);
    std::optional<std::string> value =
        PercentDecode(equals == pair.npos ? std::string_view() : pair.substr(equals + 1), true);
    if (!key || !value) {
      return InvalidArgument("the query string holds a malformed %-escape or a NUL byte");
    }
    query[std::move(*key)] = std::move(*value);
  }
  return Status::Ok();
}

std::string SerializeAnswerHead(const Headers& headers, const AnswerHead& head) {
  std::string out = fmt::format("HTTP/1.1 {} {}\r\n", head.status, head.reason);
  bool has_server = false;
  for (const auto& [name, value] : headers.fields()) {
    if (ServerOwned(name) || HasLineBreak(name) || HasLineBreak(value) || name.empty()) {
      continue;
    }
    has_server = has_server || SameName(name, "Server");
    out.append(name).append(": ").append(value).append("\r\n");
  }
  if (!has_server && !head.server.empty()) {
    out.append("Server: ").append(head.server).append("\r\n");
  }
  out.append("Date: ").append(HttpDate()).append("\r\n");
  if (head.content_length) {
    out.append(fmt::format("Content-Length: {}\r\n", *head.content_length));
  }
  if (head.close) {
    out.append("Connection: close\r\n");
  } else if (head.keep_alive) {
    out.append("Connection: keep-alive\r\n");
  }
  out.append("\r\n");
  return out;
}

}  // namespace perch::http
