#include "mqtt/mqtt_topics.h"

#include <fmt/format.h>

#include <charconv>

namespace perch::mqtt {

Result<BrokerAddress> ParseBrokerUrl(std::string_view url) {
  BrokerAddress address;
  std::string_view rest;
  if (url.starts_with("mqtt://")) {
    rest = url.substr(7);
  } else if (url.starts_with("mqtts://")) {
    rest = url.substr(8);
    address.tls = true;
    address.port = 8883;
  } else {
    return InvalidArgument(fmt::format(
        "broker URL \"{}\" must start with mqtt:// or mqtts://, e.g. mqtt://127.0.0.1:1883", url));
  }
  if (!rest.empty() && rest.back() == '/') {
    rest.remove_suffix(1);
  }
  const size_t colon = rest.rfind(':');
  if (colon != std::string_view::npos && rest.find(']') == std::string_view::npos) {
    const std::string_view port_text = rest.substr(colon + 1);
    int port = 0;
    const auto [ptr, error] =
        std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
    if (error != std::errc() || ptr != port_text.data() + port_text.size() || port < 1 ||
        port > 65535) {
      return InvalidArgument(
          fmt::format("broker URL \"{}\" has a bad port \"{}\"", url, port_text));
    }
    address.port = port;
    rest = rest.substr(0, colon);
  }
  if (rest.empty() || rest.find_first_of("/?# ") != std::string_view::npos) {
    return InvalidArgument(fmt::format("broker URL \"{}\" has no usable host", url));
  }
  address.host = std::string(rest);
  return address;
}

bool IsValidTopicLevel(std::string_view level) {
  return !level.empty() && level.size() <= 256 &&
         level.find_first_of("/+#") == std::string_view::npos &&
         level.find('\0') == std::string_view::npos;
}

std::string TopicLayout::DeviceRequests() const {
  return fmt::format("{}/{}/{}/infer/+", prefix_, location_, device_);
}

std::string TopicLayout::LocationRequests() const {
  return fmt::format("$share/perch/{}/{}/infer/+", prefix_, location_);
}

std::string TopicLayout::Status() const {
  return fmt::format("{}/{}/{}/status", prefix_, location_, device_);
}

std::string TopicLayout::Results(std::string_view model) const {
  return fmt::format("{}/{}/{}/results/{}", prefix_, location_, device_, model);
}

std::string TopicLayout::Errors() const {
  return fmt::format("{}/{}/{}/errors", prefix_, location_, device_);
}

std::string TopicLayout::Leaving() const {
  return fmt::format("{}/{}/{}/leaving", prefix_, location_, device_);
}

std::optional<std::string> TopicLayout::ModelOfRequest(std::string_view topic) const {
  for (const std::string& head : {fmt::format("{}/{}/{}/infer/", prefix_, location_, device_),
                                  fmt::format("{}/{}/infer/", prefix_, location_)}) {
    if (topic.starts_with(head)) {
      const std::string_view model = topic.substr(head.size());
      if (!model.empty() && model.find('/') == std::string_view::npos) {
        return std::string(model);
      }
    }
  }
  return std::nullopt;
}

}  // namespace perch::mqtt
