// MQTT topic parsing and broker URLs (mqtt/mqtt_topics.h): a request's topic
// comes from whoever may publish on the broker.
// Input: the topic, a newline, then a broker URL.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_input.h"
#include "mqtt/mqtt_topics.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input = perch::fuzz::AsText(data, size);
  const std::string_view topic = perch::fuzz::TakeField(input);
  const perch::mqtt::TopicLayout layout("perch", "site", "device");
  const auto model = layout.ModelOfRequest(topic);
  if (model && (model->empty() || model->find('/') != std::string::npos)) {
    __builtin_trap();  // a request names exactly one topic level
  }
  (void)perch::mqtt::IsValidTopicLevel(topic);
  (void)perch::mqtt::ParseBrokerUrl(input);
  return 0;
}
