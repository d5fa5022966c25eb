// The dashboard's files, embedded at build time (embed.cmake).
#pragma once

#include <string_view>
#include <vector>

namespace perch::dashboard {

struct Asset {
  std::string_view name;   // "index.html", "app.js", ...
  std::string_view bytes;  // as in the source file
};

extern const std::vector<Asset> kAssets;

}  // namespace perch::dashboard
