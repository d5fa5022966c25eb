// Internal to mqtt/: broker URLs and perch's topic layout, as pure functions.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "core/status.h"

namespace perch::mqtt {

struct BrokerAddress {
  std::string host;
  int port = 1883;
  bool tls = false;
};

// mqtt://HOST[:PORT] (default 1883) or mqtts://HOST[:PORT] (default 8883).
Result<BrokerAddress> ParseBrokerUrl(std::string_view url);

// A location, device or prefix: one non-empty topic level without wildcards.
bool IsValidTopicLevel(std::string_view level);

class TopicLayout {
 public:
  TopicLayout(std::string prefix, std::string location, std::string device)
      : prefix_(std::move(prefix)), location_(std::move(location)), device_(std::move(device)) {}

  std::string DeviceRequests() const;                 // <p>/<l>/<d>/infer/+
  std::string LocationRequests() const;               // $share/perch/<p>/<l>/infer/+
  std::string Status() const;                         // <p>/<l>/<d>/status
  std::string Results(std::string_view model) const;  // <p>/<l>/<d>/results/<model>
  std::string Errors() const;                         // <p>/<l>/<d>/errors
  // Where the location link marks the end of what the broker routed to it
  // before it left the shared subscription (LocationLink).
  std::string Leaving() const;  // <p>/<l>/<d>/leaving

  // The model a request topic (device or location) names; nullopt for any
  // other topic.
  std::optional<std::string> ModelOfRequest(std::string_view topic) const;

 private:
  std::string prefix_;
  std::string location_;
  std::string device_;
};

}  // namespace perch::mqtt
