#include "mqtt/device_status.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace perch::mqtt {
namespace {

using nlohmann::json;

const DeviceIdentity kIdentity{.location = "plant-a", .device = "pi-7", .version = "1.2.3"};

TEST(DeviceStatusTest, SaysStateIdentityVersionAndModels) {
  EXPECT_EQ(json::parse(StatusDocument("online", kIdentity, {"a", "b"})),
            json::parse(R"({"state": "online", "location": "plant-a", "device": "pi-7",
                            "version": "1.2.3", "models": ["a", "b"]})"));
}

TEST(DeviceStatusTest, TheLastWillIsTheSameDocumentButForTheState) {
  json online = json::parse(StatusDocument("online", kIdentity, {}));
  const json offline = json::parse(StatusDocument("offline", kIdentity, {}));
  EXPECT_EQ(offline["state"], "offline");
  EXPECT_EQ(offline["models"], json::array());
  online["state"] = "offline";
  EXPECT_EQ(online, offline);
}

}  // namespace
}  // namespace perch::mqtt
