// Who may pull from and push to the hub: an admin token (every operation),
// a device token (pulls only) and, optionally, anonymous pulls. Tokens come
// as `Authorization: Bearer <token>` or as the password of
// `Authorization: Basic`, so that docker-style clients (skopeo --creds
// user:TOKEN) work unchanged. Shared by the registry and the fleet API.
//
// Threading: pure functions of their arguments; safe from any thread.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "core/status.h"

namespace perch {

enum class AccessKind { kPull, kPush };

std::string_view ToString(AccessKind kind);
std::optional<AccessKind> AccessKindFromString(std::string_view name);

struct AccessTokens {
  std::string admin;           // required: never empty once the hub runs
  std::string device;          // empty: no device token is accepted
  bool anonymous_pull = true;  // pulls without any credentials
  // The fleet's per-device tokens, which may pull like `device`; unset: none.
  std::function<bool(std::string_view token)> enrolled_device{};
};

// Ok when `authorization` (the header's value, empty when absent) grants
// `kind`. Unauthenticated when credentials are missing or match no token;
// PermissionDenied when a device token asks to push. A Basic header with an
// empty password counts as no credentials: that is what docker-style
// clients send when they have none. Tokens are compared in constant time.
Status Authorize(const AccessTokens& tokens, std::string_view authorization, AccessKind kind);

// 32 random bytes as 64 hex digits, from the operating system's CSPRNG.
// Internal when no randomness is available.
Result<std::string> GenerateToken();

}  // namespace perch
