#include "http/server_core.h"

#include <fmt/format.h>

#include <algorithm>

namespace perch::http {

RouteLookup FindRoute(const std::vector<CompiledRoute>& routes, std::string_view method,
                      const std::string& path) {
  RouteLookup lookup;
  std::vector<std::string> allowed;
  for (const CompiledRoute& route : routes) {
    if (!path.starts_with(route.literal_prefix)) {
      continue;
    }
    std::smatch match;
    if (!std::regex_match(path, match, route.pattern)) {
      continue;
    }
    if (route.method == method || (method == "HEAD" && route.method == "GET")) {
      lookup.route = &route;
      for (const auto& group : match) {
        lookup.matches.push_back(group.str());
      }
      return lookup;
    }
    for (const std::string& name : route.method == "GET" ? std::vector<std::string>{"GET", "HEAD"}
                                                         : std::vector<std::string>{route.method}) {
      if (std::find(allowed.begin(), allowed.end(), name) == allowed.end()) {
        allowed.push_back(name);
      }
    }
  }
  lookup.allowed = fmt::format("{}", fmt::join(allowed, ", "));
  return lookup;
}

std::string LiteralPrefix(std::string_view pattern) {
  if (pattern.find('|') != std::string_view::npos) {
    return {};
  }
  constexpr std::string_view kSpecial = R"(\^$.*+?()[]{}|)";
  const size_t end = std::min(pattern.find_first_of(kSpecial), pattern.size());
  std::string prefix(pattern.substr(0, end));
  if (end < pattern.size() &&
      std::string_view("*+?{").find(pattern[end]) != std::string_view::npos && !prefix.empty()) {
    prefix.pop_back();  // the quantifier applies to it
  }
  return prefix;
}

}  // namespace perch::http
