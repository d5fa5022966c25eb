// What the HTTP layer parses itself on every request (src/http/): the
// request target (path and query, percent-decoded) and the Authorization
// header. Beast parses the rest of the head.
// Input: the target, a newline, then the Authorization header's value.
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

#include "fuzz_input.h"
#include "http/credentials.h"
#include "http/wire.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input = perch::fuzz::AsText(data, size);
  const std::string_view target = perch::fuzz::TakeField(input);
  std::string path;
  std::map<std::string, std::string> query;
  if (perch::http::ParseTarget(target, path, query).ok() &&
      (path.empty() || path.front() != '/' || path.find('\0') != std::string::npos)) {
    __builtin_trap();  // a decoded path starts with '/' and never holds NUL
  }
  const auto token = perch::http::TokenFromAuthorization(input);
  if (token.ok() && token->has_value() && (*token)->empty()) {
    __builtin_trap();  // a token, when there is one, is never empty
  }
  return 0;
}
