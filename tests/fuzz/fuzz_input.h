// Helpers shared by the libFuzzer harnesses: the input as a string_view and a
// way to cut it into the several arguments a parser takes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace perch::fuzz {

inline std::string_view AsText(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// Takes the bytes up to the first `separator` off the front of `input` (all of
// it when there is none), so one corpus file can carry several fields and
// stay readable.
inline std::string_view TakeField(std::string_view& input, char separator = '\n') {
  const size_t end = input.find(separator);
  const std::string_view field = input.substr(0, end);
  input.remove_prefix(end == std::string_view::npos ? input.size() : end + 1);
  return field;
}

}  // namespace perch::fuzz
