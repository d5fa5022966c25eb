#include "mqtt/location_link.h"

namespace perch::mqtt {
namespace {

ConnectionOptions LinkOptions(ConnectionOptions options, const TopicLayout& layout) {
  // Device and location names hold no '/', so no agent's own client id is
  // ever this one.
  options.client_id += "/location";
  options.will_topic.clear();  // the agent's own connection has the status
  options.keepalive_seconds = LocationLink::kKeepaliveSeconds;
  options.persistent_session = false;
  options.leave_filter = layout.LocationRequests();
  options.leaving_topic = layout.Leaving();
  options.metrics_prefix = "perch_mqtt_location";
  options.name = "MQTT location link";
  return options;
}

}  // namespace

LocationLink::LocationLink(const ConnectionOptions& agent, const TopicLayout& layout,
                           DurableQueue& inbox, RequestLanes& lanes, uint64_t seed,
                           MetricsRegistry& metrics, Logger logger)
    : filter_(layout.LocationRequests()),
      logger_(logger),
      lanes_(lanes),
      connection_(LinkOptions(agent, layout), *this, metrics, logger),
      inbound_(layout, no_bindings_, inbox, Inbound::Session::kEndsWithConnection, seed, metrics,
               logger) {}

Status LocationLink::Start() { return connection_.Start(); }

void LocationLink::Stop() {
  connection_.Stop();
  answered_ = false;
}

void LocationLink::OnConnected(bool session_present) {
  inbound_.NewConnection(session_present);
  subscription_ = connection_.Subscribe(filter_);
}

void LocationLink::OnConnectedChanged(bool connected) {
  if (!connected) {
    answered_ = false;
  }
}

void LocationLink::OnMessage(const IncomingMessage& message) {
  inbound_.Take(message, connection_, lanes_);
}

// Answers go out on the agent's own connection; this link publishes only the
// marker of Connection::Leave.
void LocationLink::OnPublished(int /*message_id*/, const Status& /*outcome*/) {}

void LocationLink::OnSubscribed(int message_id, bool granted) {
  if (message_id != subscription_) {
    return;
  }
  if (!granted) {
    logger_.Error(
        "MQTT: the broker refused the subscription {}: this agent gets none of the "
        "location's requests (check the broker's ACL)",
        filter_);
  }
  answered_ = true;
}

void LocationLink::OnTick() {}

std::string LocationLink::OfflineStatus() { return {}; }  // no will: see LinkOptions

}  // namespace perch::mqtt
