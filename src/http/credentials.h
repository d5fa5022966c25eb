// Credentials on an HTTP request: the token of an Authorization header, and
// the comparison of tokens. One parser for every perch server (agent, hub,
// peers), so they all accept the same forms:
//   Authorization: Bearer <token>                  (scheme in any case)
//   Authorization: Basic base64(<user>:<token>)    (docker-style clients: skopeo --creds
//   user:TOKEN)
//
// Threading: pure functions; safe from any thread.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "core/status.h"
#include "http/message.h"

namespace perch::http {

// The token an Authorization header value carries. nullopt when there is
// none: an empty header, or Basic with an empty password (what docker-style
// clients send when they have no credentials). Unauthenticated, saying
// which forms are accepted, for a header that is neither Bearer nor valid
// Basic, or a Bearer without a token.
Result<std::optional<std::string>> TokenFromAuthorization(std::string_view header);

// Compares in time independent of where the two differ.
bool TokensEqual(std::string_view a, std::string_view b);

// Ok when the request carries `expected` (never empty); Unauthenticated,
// saying what to send, otherwise. For servers with one token per surface
// (the agent's management and inference tokens, a location's peer token).
Status RequireToken(const Request& request, std::string_view expected);

// The value of a challenge header for 401 answers.
std::string BearerChallenge(std::string_view realm);

}  // namespace perch::http
