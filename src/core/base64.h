// Base64 (RFC 4648): what DSSE envelopes and HTTP Basic credentials carry.
// Threading: pure functions.
#pragma once

#include <string>
#include <string_view>

#include "core/status.h"

namespace perch {

// The standard alphabet, padded.
std::string Base64Encode(std::string_view bytes);
// The standard or the URL-safe alphabet, padding optional (DSSE allows
// both). InvalidArgument on any other character or an impossible length.
Result<std::string> Base64Decode(std::string_view text);

}  // namespace perch
