#include "fleet/placement.h"

#include <algorithm>
#include <map>
#include <tuple>

namespace perch {
namespace {

// Better first.
bool Ranks(const PlacementCandidate* a, const PlacementCandidate* b) {
  return std::tuple(a->placements, -a->memory_available_bytes, a->load, a->name) <
         std::tuple(b->placements, -b->memory_available_bytes, b->load, b->name);
}

}  // namespace

std::vector<std::string> PlaceReplicas(const std::vector<PlacementCandidate>& candidates,
                                       int64_t replicas) {
  struct Location {
    std::vector<const PlacementCandidate*> kept;
    std::vector<const PlacementCandidate*> free;
  };
  std::map<std::string, Location> locations;
  for (const PlacementCandidate& candidate : candidates) {
    if (!candidate.live) {
      continue;
    }
    Location& location = locations[candidate.location];
    (candidate.placed ? location.kept : location.free).push_back(&candidate);
  }
  const auto wanted = static_cast<size_t>(std::max<int64_t>(replicas, 0));
  std::vector<std::string> placed;
  for (auto& [name, location] : locations) {
    std::sort(location.kept.begin(), location.kept.end(), Ranks);
    std::sort(location.free.begin(), location.free.end(), Ranks);
    std::vector<const PlacementCandidate*> chosen = location.kept;
    chosen.resize(std::min(chosen.size(), wanted));
    for (size_t i = 0; i < location.free.size() && chosen.size() < wanted; ++i) {
      chosen.push_back(location.free[i]);
    }
    for (const PlacementCandidate* candidate : chosen) {
      placed.push_back(candidate->name);
    }
  }
  std::sort(placed.begin(), placed.end());
  return placed;
}

}  // namespace perch
