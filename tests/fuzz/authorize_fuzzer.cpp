// The hub's credential check (store/access.h): the Authorization header is
// the one input an unauthenticated client fully controls.
#include <cstddef>
#include <cstdint>

#include "fuzz_input.h"
#include "store/access.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view header = perch::fuzz::AsText(data, size);
  perch::AccessTokens tokens;
  tokens.admin = "admin-token";
  tokens.device = "device-token";
  tokens.anonymous_pull = false;
  tokens.enrolled_device = [](std::string_view token) { return token == "enrolled-token"; };
  const perch::Status push = perch::Authorize(tokens, header, perch::AccessKind::kPush);
  const perch::Status pull = perch::Authorize(tokens, header, perch::AccessKind::kPull);
  if (push.ok() && !pull.ok()) {
    __builtin_trap();  // whoever may push may pull
  }
  return 0;
}
