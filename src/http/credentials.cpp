#include "http/credentials.h"

#include <openssl/crypto.h>

#include "core/base64.h"

namespace perch::http {
namespace {

bool EqualsIgnoringCase(std::string_view a, std::string_view b) {
  const auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; };
  if (a.size() != b.size()) {
    return false;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (lower(a[i]) != lower(b[i])) {
      return false;
    }
  }
  return true;
}

std::string_view TrimSpaces(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) {
    text.remove_prefix(1);
  }
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) {
    text.remove_suffix(1);
  }
  return text;
}

}  // namespace

Result<std::optional<std::string>> TokenFromAuthorization(std::string_view header) {
  header = TrimSpaces(header);
  if (header.empty()) {
    return std::optional<std::string>();
  }
  const size_t space = header.find(' ');
  const std::string_view scheme = header.substr(0, space);
  const std::string_view credentials =
      space == std::string_view::npos ? std::string_view() : TrimSpaces(header.substr(space));
  if (EqualsIgnoringCase(scheme, "Bearer")) {
    if (credentials.empty()) {
      return Status(StatusCode::kUnauthenticated, "the Bearer token is empty");
    }
    return std::optional<std::string>(std::string(credentials));
  }
  if (EqualsIgnoringCase(scheme, "Basic")) {
    const auto decoded = Base64Decode(credentials);
    const size_t colon = decoded.ok() ? decoded->find(':') : std::string::npos;
    if (colon == std::string::npos) {
      return Status(StatusCode::kUnauthenticated,
                    "the Basic credentials are not base64 of user:password");
    }
    std::string password = decoded->substr(colon + 1);
    if (password.empty()) {
      return std::optional<std::string>();
    }
    return std::optional<std::string>(std::move(password));
  }
  return Status(StatusCode::kUnauthenticated,
                "the Authorization header must be 'Bearer <token>' or Basic with the token as "
                "password");
}

// Constant time for tokens of equal length; the length itself is not secret.
bool TokensEqual(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

Status RequireToken(const Request& request, std::string_view expected) {
  PERCH_ASSIGN_OR_RETURN(const std::optional<std::string> token,
                         TokenFromAuthorization(request.headers.Value("Authorization")));
  if (!token) {
    return Status(StatusCode::kUnauthenticated,
                  "this endpoint needs a token: send 'Authorization: Bearer <token>'");
  }
  if (expected.empty() || !TokensEqual(*token, expected)) {
    return Status(StatusCode::kUnauthenticated, "the token is not valid for this server");
  }
  return Status::Ok();
}

std::string BearerChallenge(std::string_view realm) {
  return "Bearer realm=\"" + std::string(realm) + "\"";
}

}  // namespace perch::http
