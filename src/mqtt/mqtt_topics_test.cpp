#include "mqtt/mqtt_topics.h"

#include <gtest/gtest.h>

namespace perch::mqtt {
namespace {

TEST(BrokerUrlTest, ParsesHostsPortsAndTls) {
  auto plain = ParseBrokerUrl("mqtt://127.0.0.1:1884");
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->host, "127.0.0.1");
  EXPECT_EQ(plain->port, 1884);
  EXPECT_FALSE(plain->tls);
  auto tls = ParseBrokerUrl("mqtts://broker.factory.local");
  ASSERT_TRUE(tls.ok());
  EXPECT_EQ(tls->port, 8883);
  EXPECT_TRUE(tls->tls);
  EXPECT_EQ(ParseBrokerUrl("mqtt://h/").value().port, 1883);
}

TEST(BrokerUrlTest, RefusesBadUrls) {
  for (const char* url : {"tcp://h:1883", "mqtt://", "mqtt://h:0", "mqtt://h:70000", "mqtt://h:x",
                          "mqtt://h/path", "h:1883"}) {
    const auto parsed = ParseBrokerUrl(url);
    EXPECT_FALSE(parsed.ok()) << url;
    EXPECT_EQ(parsed.status().code(), StatusCode::kInvalidArgument);
  }
}

TEST(TopicLayoutTest, NamesAndParsesTopics) {
  const TopicLayout layout("perch", "plant-a", "pi-7");
  EXPECT_EQ(layout.DeviceRequests(), "perch/plant-a/pi-7/infer/+");
  EXPECT_EQ(layout.LocationRequests(), "$share/perch/perch/plant-a/infer/+");
  EXPECT_EQ(layout.Status(), "perch/plant-a/pi-7/status");
  EXPECT_EQ(layout.Results("m"), "perch/plant-a/pi-7/results/m");
  EXPECT_EQ(layout.Leaving(), "perch/plant-a/pi-7/leaving");
  EXPECT_FALSE(layout.ModelOfRequest(layout.Leaving()).has_value());
  EXPECT_EQ(layout.ModelOfRequest("perch/plant-a/pi-7/infer/hey_jarvis"), "hey_jarvis");
  EXPECT_EQ(layout.ModelOfRequest("perch/plant-a/infer/vad"), "vad");
  EXPECT_FALSE(layout.ModelOfRequest("perch/plant-b/infer/vad").has_value());
  EXPECT_FALSE(layout.ModelOfRequest("perch/plant-a/infer/").has_value());
  EXPECT_FALSE(layout.ModelOfRequest("perch/plant-a/infer/a/b").has_value());
  EXPECT_FALSE(layout.ModelOfRequest("sensors/audio").has_value());
}

TEST(TopicLayoutTest, TopicLevels) {
  EXPECT_TRUE(IsValidTopicLevel("pi-7"));
  EXPECT_FALSE(IsValidTopicLevel(""));
  EXPECT_FALSE(IsValidTopicLevel("a/b"));
  EXPECT_FALSE(IsValidTopicLevel("+"));
  EXPECT_FALSE(IsValidTopicLevel("#"));
}

}  // namespace
}  // namespace perch::mqtt
