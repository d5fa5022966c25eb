// The bridge wires the parts of mqtt/ together, each a role of its own:
//   Connection      the link to the broker (libmosquitto, reconnects, will)
//   LocationLink    the location's shared subscription, on a session that
//                   ends with its connection
//   Inbound         requests into the inbox, redeliveries recognised
//   RequestLanes    inbox -> AnswerRequest (the pure step) -> outbox
//   Delivery        outbox -> broker, acknowledgements
//   StreamBindings  the models' event-stream topics
//   StatusDocument  the retained status and last will
#include "mqtt/mqtt_bridge.h"

#include <fmt/format.h>

#include <random>

#include "mqtt/connection.h"
#include "mqtt/delivery.h"
#include "mqtt/device_status.h"
#include "mqtt/inbound.h"
#include "mqtt/location_link.h"
#include "mqtt/mqtt_topics.h"
#include "mqtt/request_lanes.h"
#include "mqtt/stream_bindings.h"

namespace perch {
namespace {

constexpr auto kBindingRefresh = std::chrono::seconds(2);

}  // namespace

// Threading: the ConnectionListener methods run on the connection's network
// thread, which alone touches bindings_, inbound_, next_refresh_ and
// announced_ once Start has started it. The location link has a network
// thread of its own (location_link.h).
class MqttBridge::Impl final : public mqtt::ConnectionListener {
 public:
  Impl(const MqttOptions& options, mqtt::BrokerAddress address, const InferenceService& inference,
       const ModelManager& models, DurableQueue& inbox, DurableQueue& outbox,
       MetricsRegistry& metrics, const Logger& logger)
      : address_(std::move(address)),
        client_id_(fmt::format("perch-{}-{}", options.location, options.device)),
        layout_(options.prefix, options.location, options.device),
        identity_{options.location, options.device, options.server_version},
        models_(models),
        logger_(logger),
        connection_options_{
            .address = address_,
            .client_id = client_id_,
            .username = options.username,
            .password = options.password,
            .ca_file = options.ca_file,
            .will_topic = layout_.Status(),
            .keepalive_seconds = options.keepalive_seconds,
            .persistent_session = true,
            .leave_filter = {},
            .leaving_topic = {},
            .metrics_prefix = "perch_mqtt",
            .name = "MQTT",
            .reconnect_min = options.reconnect_min,
            .reconnect_max = options.reconnect_max,
            .seed = std::random_device{}(),
        },
        connection_(connection_options_, *this, metrics, logger),
        inbound_(layout_, bindings_, inbox, mqtt::Inbound::Session::kPersistent,
                 std::random_device{}(), metrics, logger),
        delivery_(outbox, inbox, connection_, options.max_inflight, metrics, logger),
        lanes_(options.lanes, inference, layout_, client_id_, inbox, outbox, delivery_, logger),
        location_(connection_options_, layout_, inbox, lanes_, std::random_device{}(), metrics,
                  logger) {}

  ~Impl() override { Stop(); }

  Status Start() {
    // The bindings first: the will repeats the status, model list included.
    (void)bindings_.Refresh(models_);
    lanes_.Start();
    // Before the connection: requests accepted before a restart go first.
    if (Status resumed = lanes_.ResumeInbox(); !resumed.ok()) {
      lanes_.Stop();
      return resumed;
    }
    delivery_.Start();
    if (Status started = connection_.Start(); !started.ok()) {
      delivery_.Stop();
      lanes_.Stop();
      return started;
    }
    if (Status started = location_.Start(); !started.ok()) {
      connection_.Stop();
      delivery_.Stop();
      lanes_.Stop();
      return started;
    }
    logger_.Info("MQTT: connecting to {}:{} as {} (location {}, device {})", address_.host,
                 address_.port, client_id_, identity_.location, identity_.device);
    return Status::Ok();
  }

  // The location first, so that its later requests go to the other agents
  // while what it had taken in is still answered. Answers being worked on
  // still go out: the connection closes last.
  void Stop() {
    location_.Stop();
    lanes_.Stop();
    delivery_.Stop();
    connection_.Stop();
  }

 private:
  // --- mqtt::ConnectionListener, on the network thread -------------------------

  void OnConnected(bool session_present) override {
    inbound_.NewConnection(session_present);
    if (session_present) {
      // Earlier versions held the location's subscription on this session,
      // where it outlives the agent: the location link holds it now.
      connection_.Unsubscribe(layout_.LocationRequests());
    }
    connection_.Subscribe(layout_.DeviceRequests());
    for (const auto& filter : bindings_.Filters()) {
      connection_.Subscribe(filter);
    }
    announced_ = false;
    AnnounceWhenReady();
    // Whatever was in flight before is sent again from the oldest record:
    // the broker may not have it, and receivers drop repeats by key.
    delivery_.Restart();
  }

  void OnConnectedChanged(bool /*connected*/) override { delivery_.Wake(); }

  void OnMessage(const mqtt::IncomingMessage& message) override {
    inbound_.Take(message, connection_, lanes_);
  }

  void OnPublished(int message_id, const Status& outcome) override {
    delivery_.OnPublished(message_id, outcome);
  }

  void OnTick() override {
    if (connection_.connected()) {
      AnnounceWhenReady();
    }
    const auto now = std::chrono::steady_clock::now();
    if (now < next_refresh_) {
      return;
    }
    next_refresh_ = now + kBindingRefresh;
    const auto changes = bindings_.Refresh(models_);
    if (!changes || !connection_.connected()) {
      return;  // OnConnected subscribes to what is bound then
    }
    for (const auto& filter : changes->unsubscribe) {
      connection_.Unsubscribe(filter);
    }
    for (const auto& filter : changes->subscribe) {
      connection_.Subscribe(filter);
    }
    if (announced_) {
      PublishStatus();
    }
  }

  // The status says online once the agent takes the location's requests too
  // (clients wait for it before they publish), then on every change.
  void AnnounceWhenReady() {
    if (!announced_ && location_.answered()) {
      announced_ = PublishStatus();
    }
  }

  std::string OfflineStatus() override {
    return mqtt::StatusDocument("offline", identity_, bindings_.model_names());
  }

  bool PublishStatus() {
    const std::string online = mqtt::StatusDocument("online", identity_, bindings_.model_names());
    const std::string topic = layout_.Status();
    const auto published = connection_.Publish(mqtt::OutgoingMessage{.topic = topic,
                                                                     .payload = online,
                                                                     .retain = true,
                                                                     .content_type = {},
                                                                     .idempotency_key = {},
                                                                     .correlation = {}});
    if (!published.ok()) {
      logger_.Warn("MQTT: the status could not be published: {}", published.status().message());
    }
    return published.ok();
  }

  const mqtt::BrokerAddress address_;
  const std::string client_id_;
  const mqtt::TopicLayout layout_;
  const mqtt::DeviceIdentity identity_;
  const ModelManager& models_;
  const Logger logger_;

  // Network thread only (and Start, before it runs).
  mqtt::StreamBindings bindings_;
  std::chrono::steady_clock::time_point next_refresh_;
  bool announced_ = false;  // the online status went out on this connection

  // Declared in the order they depend on each other; each has its own
  // threading model (see their headers).
  const mqtt::ConnectionOptions connection_options_;
  mqtt::Connection connection_;
  mqtt::Inbound inbound_;
  mqtt::Delivery delivery_;
  mqtt::RequestLanes lanes_;
  mqtt::LocationLink location_;
};

Status MqttBridge::CheckOptions(const MqttOptions& options) {
  PERCH_RETURN_IF_ERROR(mqtt::ParseBrokerUrl(options.url).status());
  for (const auto& [what, level] :
       {std::pair{"location", options.location}, std::pair{"device", options.device},
        std::pair{"prefix", options.prefix}}) {
    if (!mqtt::IsValidTopicLevel(level)) {
      return InvalidArgument(
          fmt::format("the MQTT {} \"{}\" must be one topic level: not empty, no '/', '+' or '#'",
                      what, level));
    }
  }
  if (options.max_inflight < 1 || options.lanes < 1) {
    return InvalidArgument("MQTT needs at least one lane and one message in flight");
  }
  if (options.keepalive_seconds < 5 || options.keepalive_seconds > 65535) {
    return InvalidArgument(fmt::format("the MQTT keepalive must be 5 to 65535 seconds, not {}",
                                       options.keepalive_seconds));
  }
  if (options.reconnect_min.count() < 1 || options.reconnect_max < options.reconnect_min) {
    return InvalidArgument(
        fmt::format("the longest MQTT reconnect wait ({} ms) must be at least the shortest ({} ms)",
                    options.reconnect_max.count(), options.reconnect_min.count()));
  }
  return Status::Ok();
}

Result<std::unique_ptr<MqttBridge>> MqttBridge::Create(const MqttOptions& options,
                                                       const InferenceService& inference,
                                                       const ModelManager& models,
                                                       DurableQueue& inbox, DurableQueue& outbox,
                                                       MetricsRegistry& metrics, Logger logger) {
  PERCH_RETURN_IF_ERROR(CheckOptions(options));
  PERCH_ASSIGN_OR_RETURN(auto address, mqtt::ParseBrokerUrl(options.url));
  return std::unique_ptr<MqttBridge>(new MqttBridge(std::make_unique<Impl>(
      options, std::move(address), inference, models, inbox, outbox, metrics, logger)));
}

MqttBridge::MqttBridge(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MqttBridge::~MqttBridge() = default;

Status MqttBridge::Start() { return impl_->Start(); }
void MqttBridge::Stop() { impl_->Stop(); }

}  // namespace perch
