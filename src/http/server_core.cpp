#include "http/server_core.h"

#include <fmt/format.h>

#include <algorithm>

namespace perch::http {

RouteLookup FindRoute(const std::vector<CompiledRoute>& routes, std::string_view method,
                      const std::string& path) {
  RouteLookup lookup;
  std::vector<std::string> allowed;
  for (const CompiledRoute& route : routes) {
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

}  // namespace perch::http
