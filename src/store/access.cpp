#include "store/access.h"

#include <openssl/rand.h>

#include <array>
#include <cstdint>

#include "core/enum_names.h"
#include "http/credentials.h"

namespace perch {
namespace {

constexpr EnumNames<AccessKind, 2> kAccessKindNames{{
    {AccessKind::kPull, "pull"},
    {AccessKind::kPush, "push"},
}};

// Constant time for tokens of equal length; never matches an unset token.
bool SameToken(std::string_view given, std::string_view expected) {
  return !expected.empty() && http::TokensEqual(given, expected);
}

}  // namespace

std::string_view ToString(AccessKind kind) { return EnumToString(kAccessKindNames, kind); }
std::optional<AccessKind> AccessKindFromString(std::string_view name) {
  return EnumFromString(kAccessKindNames, name);
}

Status Authorize(const AccessTokens& tokens, std::string_view authorization, AccessKind kind) {
  PERCH_ASSIGN_OR_RETURN(const std::optional<std::string> token,
                         http::TokenFromAuthorization(authorization));
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
