// Placement: which devices of each location serve a deployment that asks
// for N replicas. A pure function of what the hub knows, so the hub's
// FleetStore decides when to place and this file only decides where.
//
// Per location, the devices that hold the deployment and are still live
// keep it (a new revision, a device's memory changing or a reboot within
// the grace do not move a model); the rest of the N come from the best
// live devices that do not hold it, ranked by
//   1. fewest placements of other deployments (K models over M devices
//      land evenly: greedy on the count keeps every device within one),
//   2. most memory available, as the device last reported it,
//   3. least load,
//   4. name (the same inputs always give the same answer).
// When more than N hold it (the replicas went down), the worst ranked are
// dropped.
//
// Threading: stateless; safe from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace perch {

// One device the deployment's selector matches.
struct PlacementCandidate {
  std::string name{};
  std::string location{};
  bool live = false;      // heard from within the placement grace
  bool placed = false;    // holds the deployment now
  size_t placements = 0;  // other deployments placed on it
  int64_t memory_available_bytes = 0;
  double load = 0;
};

// The devices that should hold the deployment, `replicas` per location at
// most (all live ones where there are fewer), ascending by name.
std::vector<std::string> PlaceReplicas(const std::vector<PlacementCandidate>& candidates,
                                       int64_t replicas);

}  // namespace perch
