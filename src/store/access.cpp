#include "store/access.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <array>
#include <cstdint>

#include "core/enum_names.h"

namespace perch {
namespace {

constexpr EnumNames<AccessKind, 2> kAccessKindNames{{
    {AccessKind::kPull, "pull"},
    {AccessKind::kPush, "push"},
}};

// RFC 4648 base64 (padding optional); nullopt on any other character.
std::optional<std::string> DecodeBase64(std::string_view text) {
  while (!text.empty() && text.back() == '=') {
    text.remove_suffix(1);
  }
  std::string out;
  uint32_t bits = 0;
  int count = 0;
  for (const char c : text) {
    uint32_t value = 0;
    if (c >= 'A' && c <= 'Z') {
      value = static_cast<uint32_t>(c - 'A');
    } else if (c >= 'a' && c <= 'z') {
      value = static_cast<uint32_t>(c - 'a' + 26);
    } else if (c >= '0' && c <= '9') {
      value = static_cast<uint32_t>(c - '0' + 52);
    } else if (c == '+') {
      value = 62;
    } else if (c == '/') {
      value = 63;
    } else {
      return std::nullopt;
    }
    bits = (bits << 6) | value;
    count += 6;
    if (count >= 8) {
      count -= 8;
      out.push_back(static_cast<char>((bits >> count) & 0xff));
    }
  }
  return out;
}

// Constant time for tokens of equal length; the length itself is not secret.
bool SameToken(std::string_view given, std::string_view expected) {
  return !expected.empty() && given.size() == expected.size() &&
         CRYPTO_memcmp(given.data(), expected.data(), given.size()) == 0;
}

bool StartsWithIgnoringCase(std::string_view text, std::string_view prefix) {
  if (text.size() < prefix.size()) {
    return false;
  }
  for (size_t i = 0; i < prefix.size(); ++i) {
    const auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; };
    if (lower(text[i]) != lower(prefix[i])) {
      return false;
    }
  }
  return true;
}

// The token in the header: nullopt when there are no credentials at all.
Result<std::optional<std::string>> TokenOf(std::string_view authorization) {
  if (authorization.empty()) {
    return std::optional<std::string>();
  }
  if (StartsWithIgnoringCase(authorization, "Bearer ")) {
    return std::optional<std::string>(std::string(authorization.substr(7)));
  }
  if (StartsWithIgnoringCase(authorization, "Basic ")) {
    const auto decoded = DecodeBase64(authorization.substr(6));
    const size_t colon = decoded ? decoded->find(':') : std::string::npos;
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
                "the Authorization header must be Bearer <token> or Basic with the token as "
                "password");
}

}  // namespace

std::string_view ToString(AccessKind kind) { return EnumToString(kAccessKindNames, kind); }
std::optional<AccessKind> AccessKindFromString(std::string_view name) {
  return EnumFromString(kAccessKindNames, name);
}

Status Authorize(const AccessTokens& tokens, std::string_view authorization, AccessKind kind) {
  PERCH_ASSIGN_OR_RETURN(const std::optional<std::string> token, TokenOf(authorization));
  if (!token) {
    if (kind == AccessKind::kPull && tokens.anonymous_pull) {
      return Status::Ok();
    }
    return Status(StatusCode::kUnauthenticated, kind == AccessKind::kPush
                                                    ? "pushing needs the admin token"
                                                    : "pulling needs a device or admin token");
  }
  // Both comparisons always run, so timing does not tell which token matched.
  const bool admin = SameToken(*token, tokens.admin);
  const bool device = SameToken(*token, tokens.device) ||
                      (!admin && tokens.enrolled_device && tokens.enrolled_device(*token));
  if (admin) {
    return Status::Ok();
  }
  if (device) {
    return kind == AccessKind::kPull
               ? Status::Ok()
               : Status(StatusCode::kPermissionDenied,
                        "the device token may pull but not push: pushing needs the admin token");
  }
  return Status(StatusCode::kUnauthenticated, "the token is not valid for this hub");
}

Result<std::string> GenerateToken() {
  std::array<unsigned char, 32> bytes{};
  if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1) {
    return Internal("no randomness available to generate a token");
  }
  constexpr char kHex[] = "0123456789abcdef";
  std::string token;
  for (const unsigned char byte : bytes) {
    token.push_back(kHex[byte >> 4]);
    token.push_back(kHex[byte & 0xf]);
  }
  return token;
}

}  // namespace perch
