// Internal to mqtt/: the agent's retained status,
// <prefix>/<location>/<device>/status. The bridge publishes it "online" on
// every connection and when the served models change; the broker publishes it
// "offline" as the last will when the link drops, and the agent does when it
// stops cleanly. Both are the same document but for "state".
//
// Threading: a pure function.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace perch::mqtt {

struct DeviceIdentity {
  std::string location;
  std::string device;
  std::string version;  // perch's
};

// {"state", "location", "device", "version", "models"}
std::string StatusDocument(std::string_view state, const DeviceIdentity& identity,
                           const std::vector<std::string>& models);

}  // namespace perch::mqtt
