#include "fleet/fleet_types.h"

#include <algorithm>

#include "core/enum_names.h"

namespace perch {
namespace {

constexpr EnumNames<RolloutStrategy, 2> kStrategyNames{{
    {RolloutStrategy::kAllAtOnce, "all-at-once"},
    {RolloutStrategy::kCanary, "canary"},
}};

bool IsNameEdge(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

}  // namespace

bool IsValidFleetName(std::string_view name) {
  if (name.empty() || name.size() > 64 || !IsNameEdge(name.front()) || !IsNameEdge(name.back())) {
    return false;
  }
  for (const char c : name) {
    if (!IsNameEdge(c) && c != '.' && c != '_' && c != '-') {
      return false;
    }
  }
  return true;
}

bool IsValidLabel(std::string_view key, std::string_view value) {
  if (!IsValidFleetName(key) || value.size() > 256) {
    return false;
  }
  for (const char c : value) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return false;
    }
  }
  return true;
}

bool IsValidEnrolmentKey(std::string_view key) {
  if (key.size() < 32 || key.size() > 128) {
    return false;
  }
  return std::all_of(key.begin(), key.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
  });
}

std::string_view DeviceStateAt(const Device& device, int64_t now, int64_t online_seconds) {
  if (device.revoked) {
    return "revoked";
  }
  if (now - device.last_seen > online_seconds) {
    return "offline";
  }
  const bool failing =
      device.heartbeat &&
      (!device.heartbeat->errors.empty() ||
       std::any_of(device.heartbeat->models.begin(), device.heartbeat->models.end(),
                   [](const ModelReport& model) { return model.state == "FAILED"; }));
  return failing ? "failing" : "online";
}

bool Selector::Matches(const Device& candidate) const {
  if (!location.empty() && location != candidate.location) {
    return false;
  }
  if (!architecture.empty() && architecture != candidate.architecture) {
    return false;
  }
  if (!device.empty() && device != candidate.name) {
    return false;
  }
  if (!facts.Matches(candidate.facts)) {
    return false;
  }
  for (const auto& [key, value] : labels) {
    const auto it = candidate.labels.find(key);
    if (it == candidate.labels.end() || it->second != value) {
      return false;
    }
  }
  return true;
}

std::string_view ToString(RolloutStrategy strategy) {
  return EnumToString(kStrategyNames, strategy);
}

std::optional<RolloutStrategy> RolloutStrategyFromString(std::string_view name) {
  return EnumFromString(kStrategyNames, name);
}

const Revision* Deployment::Current() const {
  for (auto it = revisions.rbegin(); it != revisions.rend(); ++it) {
    if (!it->rolled_back) {
      return &*it;
    }
  }
  return nullptr;
}

const Revision* Deployment::Previous() const {
  const Revision* current = Current();
  if (current == nullptr) {
    return nullptr;
  }
  for (auto it = revisions.rbegin(); it != revisions.rend(); ++it) {
    if (!it->rolled_back && it->number < current->number) {
      return &*it;
    }
  }
  return nullptr;
}

std::vector<std::string> PlacementWarnings(const Deployment& deployment) {
  std::vector<std::string> warnings;
  for (const Placement& placement : deployment.placements) {
    if (static_cast<int64_t>(placement.devices.size()) < placement.replicas) {
      warnings.push_back("location '" + placement.location + "' has " +
                         std::to_string(placement.devices.size()) +
                         " device(s) that can take it for " + std::to_string(placement.replicas) +
                         " replicas: it runs on all of them");
    }
  }
  return warnings;
}

}  // namespace perch
