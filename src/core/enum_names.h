// The one way perch spells enum values: a table of (value, name) pairs,
// looked up both ways. Each `enum class` keeps its table beside its
// ToString / FromString functions.
#pragma once

#include <array>
#include <cstddef>
#include <optional>
#include <string_view>
#include <utility>

namespace perch {

template <typename Enum, size_t N>
using EnumNames = std::array<std::pair<Enum, std::string_view>, N>;

// The name of `value`; the first name of the table if it is missing.
template <typename Enum, size_t N>
constexpr std::string_view EnumToString(const EnumNames<Enum, N>& names, Enum value) {
  for (const auto& [known, name] : names) {
    if (known == value) {
      return name;
    }
  }
  return names.front().second;
}

template <typename Enum, size_t N>
constexpr std::optional<Enum> EnumFromString(const EnumNames<Enum, N>& names,
                                             std::string_view name) {
  for (const auto& [value, known] : names) {
    if (known == name) {
      return value;
    }
  }
  return std::nullopt;
}

}  // namespace perch
