#include "mqtt/device_status.h"

#include <nlohmann/json.hpp>

namespace perch::mqtt {

std::string StatusDocument(std::string_view state, const DeviceIdentity& identity,
                           const std::vector<std::string>& models) {
  return nlohmann::json{{"state", state},
                        {"location", identity.location},
                        {"device", identity.device},
                        {"version", identity.version},
                        {"models", models}}
      .dump();
}

}  // namespace perch::mqtt
