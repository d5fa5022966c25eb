#include "models/memory_budget.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

namespace perch {
namespace {

// The first whitespace-separated word of `file`, if it can be read.
std::optional<std::string> FirstWord(const std::filesystem::path& file) {
  std::ifstream in(file);
  std::string word;
  if (!(in >> word)) {
    return std::nullopt;
  }
  return word;
}

std::optional<int64_t> ParseBytes(const std::string& text) {
  int64_t value = 0;
  const auto [ptr, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || ptr != text.data() + text.size() || value <= 0) {
    return std::nullopt;
  }
  return value;
}

// A cgroup limit, or nullopt for "max" and for v1's "no limit" (a huge value
// near the largest page-aligned int64).
std::optional<int64_t> CgroupLimit(const std::filesystem::path& root) {
  for (const char* file : {"memory.max", "memory/memory.limit_in_bytes"}) {
    const auto word = FirstWord(root / file);
    if (!word) {
      continue;
    }
    const auto bytes = ParseBytes(*word);
    if (bytes && *bytes < (int64_t{1} << 60)) {
      return bytes;
    }
    return std::nullopt;
  }
  return std::nullopt;
}

std::optional<int64_t> MemAvailable(const std::filesystem::path& meminfo) {
  std::ifstream in(meminfo);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string key;
    int64_t kib = 0;
    if (fields >> key >> kib && key == "MemAvailable:" && kib > 0) {
      return kib * 1024;
    }
  }
  return std::nullopt;
}

}  // namespace

Result<int64_t> ParseMemorySize(std::string_view text) {
  const auto refuse = [&] {
    return InvalidArgument(fmt::format(
        "memory size \"{}\" is not understood: give 0 (no limit), a byte count, or a number "
        "with K, M, G or T (binary units), e.g. 512M or 1.5G",
        text));
  };
  size_t end = 0;
  while (end < text.size() &&
         (std::isdigit(static_cast<unsigned char>(text[end])) != 0 || text[end] == '.')) {
    ++end;
  }
  if (end == 0) {
    return refuse();
  }
  double number = 0;
  const auto [ptr, error] = std::from_chars(text.data(), text.data() + end, number);
  if (error != std::errc() || ptr != text.data() + end) {
    return refuse();
  }
  std::string_view suffix = text.substr(end);
  double unit = 1;
  if (!suffix.empty()) {
    const char letter = static_cast<char>(std::toupper(static_cast<unsigned char>(suffix[0])));
    const std::string_view letters = "KMGT";
    const auto position = letters.find(letter);
    if (position != std::string_view::npos) {
      unit = std::pow(1024.0, static_cast<double>(position + 1));
      suffix.remove_prefix(1);
      if (!suffix.empty() && (suffix[0] == 'i' || suffix[0] == 'I')) {
        suffix.remove_prefix(1);
      }
    }
    if (!suffix.empty() && (suffix[0] == 'B' || suffix[0] == 'b')) {
      suffix.remove_prefix(1);
    }
    if (!suffix.empty()) {
      return refuse();
    }
  }
  const double bytes = std::round(number * unit);
  if (bytes > 9.0e18) {
    return refuse();
  }
  return static_cast<int64_t>(bytes);
}

Result<int64_t> ResolveMemoryLimit(std::string_view flag) {
  if (flag == "auto") {
    return DefaultMemoryLimit();
  }
  return ParseMemorySize(flag);
}

int64_t DefaultMemoryLimit(const std::filesystem::path& cgroup_root,
                           const std::filesystem::path& meminfo) {
  auto limit = CgroupLimit(cgroup_root);
  if (!limit) {
    limit = MemAvailable(meminfo);
  }
  return limit ? *limit / 10 * 9 : 0;
}

int64_t ResidentBytes() {
  std::ifstream in("/proc/self/statm");
  int64_t size = 0;
  int64_t resident = 0;
  if (!(in >> size >> resident)) {
    return 0;
  }
  return resident * static_cast<int64_t>(sysconf(_SC_PAGESIZE));
}

}  // namespace perch
