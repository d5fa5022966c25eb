#include "mqtt/connection.h"

#include <fmt/format.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <random>

#include "mqtt/tcp_probe.h"

namespace perch::mqtt {
namespace {

constexpr int kSessionExpirySeconds = 7 * 24 * 3600;
// The most requests we ask the broker to send before we acknowledge them
// (MQTT 5 Receive Maximum).
constexpr int kReceiveMaximum = 20;
constexpr int kLoopTimeoutMs = 100;
// How long a clean Stop waits for what the broker had routed to a filter it
// leaves: a round trip, and what was queued behind the Receive Maximum.
constexpr auto kLeaveTimeout = std::chrono::seconds(5);

}  // namespace

class Connection::Client {
 public:
  explicit Client(mosquitto* handle) : handle_(handle) {}
  ~Client() { mosquitto_destroy(handle_); }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  mosquitto* get() const { return handle_; }

 private:
  mosquitto* const handle_;
};

struct Connection::Callbacks {
  static void OnConnect(mosquitto*, void* self, int rc, int flags, const mosquitto_property*) {
    static_cast<Connection*>(self)->OnConnect(rc, flags);
  }
  static void OnDisconnect(mosquitto*, void* self, int rc, const mosquitto_property*) {
    static_cast<Connection*>(self)->OnDisconnect(rc);
  }
  static void OnPublish(mosquitto*, void* self, int mid, int reason, const mosquitto_property*) {
    static_cast<Connection*>(self)->listener_.OnPublished(
        mid, reason >= 0x80 ? Unavailable(mosquitto_reason_string(reason)) : Status::Ok());
  }
  static void OnSubscribe(mosquitto*, void* self, int mid, int granted_count, const int* granted,
                          const mosquitto_property*) {
    // A refused filter comes back as a reason code of 0x80 or above.
    const bool all_granted = granted_count > 0 && std::all_of(granted, granted + granted_count,
                                                              [](int qos) { return qos < 0x80; });
    static_cast<Connection*>(self)->listener_.OnSubscribed(mid, all_granted);
  }
  static void OnMessage(mosquitto*, void* self, const mosquitto_message* message,
                        const mosquitto_property* properties) {
    auto& connection = *static_cast<Connection*>(self);
    if (!connection.options_.leaving_topic.empty() &&
        connection.options_.leaving_topic == message->topic) {
      // Leave's marker: everything the broker routed here before it came.
      if (!connection.leaving_marker_.empty() &&
          std::string_view(static_cast<const char*>(message->payload),
                           static_cast<size_t>(message->payloadlen)) ==
              connection.leaving_marker_) {
        connection.left_ = true;
      }
      return;
    }
    IncomingMessage incoming{.topic = message->topic,
                             .payload = std::string_view(static_cast<const char*>(message->payload),
                                                         static_cast<size_t>(message->payloadlen)),
                             .qos = message->qos,
                             .message_id = message->mid,
                             .response_topic = {},
                             .correlation = {}};
    char* response_topic = nullptr;
    if (mosquitto_property_read_string(properties, MQTT_PROP_RESPONSE_TOPIC, &response_topic,
                                       false)) {
      incoming.response_topic = response_topic;
      free(response_topic);
    }
    void* correlation = nullptr;
    uint16_t correlation_length = 0;
    if (mosquitto_property_read_binary(properties, MQTT_PROP_CORRELATION_DATA, &correlation,
                                       &correlation_length, false)) {
      incoming.correlation.assign(static_cast<const char*>(correlation), correlation_length);
      free(correlation);
    }
    connection.listener_.OnMessage(incoming);
  }
};

Connection::Connection(ConnectionOptions options, ConnectionListener& listener,
                       MetricsRegistry& metrics, Logger logger)
    : options_(std::move(options)),
      listener_(listener),
      logger_(std::move(logger)),
      connected_gauge_(metrics.GetGauge(options_.metrics_prefix + "_connected",
                                        "1 while connected to the broker", {})),
      connects_(metrics.GetCounter(options_.metrics_prefix + "_connects_total",
                                   "Connections made to the broker", {})),
      backoff_(options_.reconnect_min, options_.reconnect_max, options_.seed) {}

Connection::~Connection() { Stop(); }

Status Connection::Start() {
  mosquitto_lib_init();
  if (Status made = ReplaceClient(); !made.ok()) {
    mosquitto_lib_cleanup();
    return made;
  }
  network_ = std::thread([this] { NetworkLoop(); });
  started_ = true;
  return Status::Ok();
}

void Connection::Stop() {
  if (!started_) {
    return;
  }
  started_ = false;
  {
    std::lock_guard lock(stop_mutex_);
    stopping_ = true;
  }
  stop_wakeup_.notify_all();
  if (network_.joinable()) {
    network_.join();
  }
  {
    std::lock_guard lock(client_mutex_);
    client_.reset();
  }
  mosquitto_lib_cleanup();
}

Status Connection::ReplaceClient() {
  mosquitto* handle = mosquitto_new(options_.client_id.c_str(),
                                    /*clean_session=*/!options_.persistent_session, this);
  if (!handle) {
    return Internal("cannot create the MQTT client");
  }
  auto client = std::make_unique<Client>(handle);
  mosquitto_int_option(handle, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
  mosquitto_int_option(handle, MOSQ_OPT_RECEIVE_MAXIMUM, kReceiveMaximum);
  // Answers are small packets sent right after a PUBACK: without this the
  // kernel holds each one until the broker's delayed ACK, about 40 ms.
  mosquitto_int_option(handle, MOSQ_OPT_TCP_NODELAY, 1);
  // Other threads publish while the network thread runs the loop.
  mosquitto_threaded_set(handle, true);
  mosquitto_connect_v5_callback_set(handle, &Callbacks::OnConnect);
  mosquitto_disconnect_v5_callback_set(handle, &Callbacks::OnDisconnect);
  mosquitto_message_v5_callback_set(handle, &Callbacks::OnMessage);
  mosquitto_publish_v5_callback_set(handle, &Callbacks::OnPublish);
  mosquitto_subscribe_v5_callback_set(handle, &Callbacks::OnSubscribe);
  if (!options_.username.empty()) {
    mosquitto_username_pw_set(handle, options_.username.c_str(),
                              options_.password.empty() ? nullptr : options_.password.c_str());
  }
  if (options_.address.tls) {
    const int rc = mosquitto_tls_set(
        handle, options_.ca_file.empty() ? nullptr : options_.ca_file.c_str(),
        options_.ca_file.empty() ? "/etc/ssl/certs" : nullptr, nullptr, nullptr, nullptr);
    if (rc != MOSQ_ERR_SUCCESS) {
      return InvalidArgument(
          fmt::format("cannot use the MQTT TLS settings: {}", mosquitto_strerror(rc)));
    }
  }
  if (!options_.will_topic.empty()) {
    const std::string offline = listener_.OfflineStatus();
    mosquitto_will_set_v5(handle, options_.will_topic.c_str(), static_cast<int>(offline.size()),
                          offline.data(), 1, true, nullptr);
  }
  std::lock_guard lock(client_mutex_);
  client_.swap(client);
  return Status::Ok();  // the old client, if any, is destroyed after the lock
}

void Connection::NetworkLoop() {
  int attempt = 0;
  bool socket_open = false;
  bool fresh_client = true;  // the one Start made
  while (!Stopping()) {
    if (!socket_open) {
      listener_.OnTick();
      if (!fresh_client) {
        if (const Status replaced = ReplaceClient(); !replaced.ok()) {
          logger_.Error("{}: {}", options_.name, replaced.message());
          WaitBeforeRetry(attempt++);
          continue;
        }
      }
      fresh_client = false;
      // Bounded and stoppable, unlike the blocking connect below.
      if (const Status reachable =
              ProbeTcp(options_.address.host, options_.address.port, options_.connect_timeout,
                       [this] { return Stopping(); });
          !reachable.ok()) {
        if (reachable.code() != StatusCode::kCancelled && (attempt == 0 || attempt % 10 == 0)) {
          logger_.Warn("{}: cannot reach {}:{} ({}); retrying", options_.name,
                       options_.address.host, options_.address.port, reachable.message());
        }
        WaitBeforeRetry(attempt++);
        continue;
      }
      mosquitto_property* properties = nullptr;
      if (options_.persistent_session) {
        mosquitto_property_add_int32(&properties, MQTT_PROP_SESSION_EXPIRY_INTERVAL,
                                     kSessionExpirySeconds);
      }
      const int rc = mosquitto_connect_bind_v5(client_->get(), options_.address.host.c_str(),
                                               options_.address.port, options_.keepalive_seconds,
                                               nullptr, properties);
      mosquitto_property_free_all(&properties);
      if (rc != MOSQ_ERR_SUCCESS) {
        if (attempt == 0 || attempt % 10 == 0) {
          logger_.Warn("{}: cannot reach {}:{} ({}); retrying", options_.name,
                       options_.address.host, options_.address.port,
                       rc == MOSQ_ERR_ERRNO ? std::strerror(errno) : mosquitto_strerror(rc));
        }
        WaitBeforeRetry(attempt++);
        continue;
      }
      socket_open = true;
    }
    const int rc = mosquitto_loop(client_->get(), kLoopTimeoutMs, 1);
    if (rc == MOSQ_ERR_SUCCESS) {
      if (connected_) {
        attempt = 0;
        listener_.OnTick();
      }
      continue;
    }
    socket_open = false;
    SetConnected(false);
    WaitBeforeRetry(attempt++);
  }
  if (socket_open && connected_) {
    Goodbye();
  }
}

// A clean goodbye: the shared subscription left, the status says offline,
// then the session pauses (or ends).
void Connection::Goodbye() {
  if (!options_.leave_filter.empty()) {
    Leave();
  }
  if (!options_.will_topic.empty()) {
    const std::string offline = listener_.OfflineStatus();
    mosquitto_publish_v5(client_->get(), nullptr, options_.will_topic.c_str(),
                         static_cast<int>(offline.size()), offline.data(), 1, true, nullptr);
  }
  mosquitto_disconnect_v5(client_->get(), MQTT_RC_NORMAL_DISCONNECTION, nullptr);
  for (int i = 0; i < 10 && mosquitto_loop(client_->get(), 50, 1) == MOSQ_ERR_SUCCESS; ++i) {
  }
}

// The broker handles a client's packets in order: once it has handled the
// UNSUBSCRIBE it routes nothing more here, and the marker published right
// after it queues behind everything it routed before. So when the marker
// comes back, every request routed here has been taken in (the listener got
// it, and the broker its acknowledgement).
void Connection::Leave() {
  mosquitto* client = client_->get();
  leaving_marker_ = fmt::format("{:016x}", std::random_device{}() ^ options_.seed);
  left_ = false;
  mosquitto_unsubscribe_v5(client, nullptr, options_.leave_filter.c_str(), nullptr);
  mosquitto_publish_v5(client, nullptr, options_.leaving_topic.c_str(),
                       static_cast<int>(leaving_marker_.size()), leaving_marker_.data(), 1, false,
                       nullptr);
  const auto deadline = std::chrono::steady_clock::now() + kLeaveTimeout;
  while (!left_ && std::chrono::steady_clock::now() < deadline &&
         mosquitto_loop(client, kLoopTimeoutMs, 1) == MOSQ_ERR_SUCCESS) {
  }
  if (!left_) {
    logger_.Warn(
        "{}: left {} without the broker confirming it sent everything routed here; "
        "requests it still held for this agent are lost",
        options_.name, options_.leave_filter);
  }
}

void Connection::WaitBeforeRetry(int attempt) {
  const auto delay = backoff_.Delay(attempt);
  std::unique_lock lock(stop_mutex_);
  stop_wakeup_.wait_for(lock, delay, [this] { return stopping_; });
}

bool Connection::Stopping() {
  std::lock_guard lock(stop_mutex_);
  return stopping_;
}

void Connection::SetConnected(bool connected) {
  if (connected_.exchange(connected) == connected) {
    return;
  }
  connected_gauge_.Set(connected ? 1 : 0);
  listener_.OnConnectedChanged(connected);
}

void Connection::OnConnect(int rc, int flags) {
  if (rc != 0) {
    logger_.Error("{}: {}:{} refused the connection: {}", options_.name, options_.address.host,
                  options_.address.port, mosquitto_reason_string(rc));
    mosquitto_disconnect(client_->get());
    return;
  }
  connects_.Increment();
  // Without a session the broker redelivers nothing from before.
  const bool session_present = (flags & 1) != 0;
  logger_.Info("{}: connected to {}:{}{}", options_.name, options_.address.host,
               options_.address.port,
               session_present || !options_.persistent_session ? "" : " (new session)");
  if (!options_.leaving_topic.empty()) {
    mosquitto_subscribe_v5(client_->get(), nullptr, options_.leaving_topic.c_str(), 1, 0, nullptr);
  }
  listener_.OnConnected(session_present);
  SetConnected(true);
}

void Connection::OnDisconnect(int rc) {
  if (rc != 0 && !Stopping()) {
    logger_.Warn("{}: connection to {}:{} lost ({}); reconnecting", options_.name,
                 options_.address.host, options_.address.port, mosquitto_strerror(rc));
  }
  SetConnected(false);
}

Result<int> Connection::Publish(const OutgoingMessage& message) {
  mosquitto_property* properties = nullptr;
  if (!message.content_type.empty()) {
    mosquitto_property_add_string(&properties, MQTT_PROP_CONTENT_TYPE,
                                  std::string(message.content_type).c_str());
  }
  if (!message.idempotency_key.empty()) {
    mosquitto_property_add_string_pair(&properties, MQTT_PROP_USER_PROPERTY, "idempotency-key",
                                       std::string(message.idempotency_key).c_str());
  }
  if (!message.correlation.empty()) {
    mosquitto_property_add_binary(&properties, MQTT_PROP_CORRELATION_DATA,
                                  message.correlation.data(),
                                  static_cast<uint16_t>(message.correlation.size()));
  }
  const std::string topic(message.topic);
  int mid = 0;
  int rc = MOSQ_ERR_NO_CONN;
  {
    std::lock_guard lock(client_mutex_);
    if (client_) {
      rc = mosquitto_publish_v5(client_->get(), &mid, topic.c_str(),
                                static_cast<int>(message.payload.size()), message.payload.data(), 1,
                                message.retain, properties);
    }
  }
  mosquitto_property_free_all(&properties);
  if (rc == MOSQ_ERR_SUCCESS) {
    return mid;
  }
  if (rc == MOSQ_ERR_NO_CONN || rc == MOSQ_ERR_CONN_LOST || rc == MOSQ_ERR_NOMEM) {
    return Unavailable(fmt::format("not connected to the broker ({})", mosquitto_strerror(rc)));
  }
  return InvalidArgument(mosquitto_strerror(rc));
}

int Connection::Subscribe(const std::string& filter) {
  std::lock_guard lock(client_mutex_);
  int mid = 0;
  if (client_ && mosquitto_subscribe_v5(client_->get(), &mid, filter.c_str(), 1, 0, nullptr) !=
                     MOSQ_ERR_SUCCESS) {
    mid = 0;
  }
  return mid;
}

void Connection::Unsubscribe(const std::string& filter) {
  std::lock_guard lock(client_mutex_);
  if (client_) {
    mosquitto_unsubscribe_v5(client_->get(), nullptr, filter.c_str(), nullptr);
  }
}

void Connection::DropBeforeAcknowledging() {
  // On the network thread, which uses client_ without the lock.
  const int socket = mosquitto_socket(client_->get());
  if (socket >= 0) {
    // The queued PUBACK's write then fails; the loop reconnects as after any
    // lost connection.
    ::shutdown(socket, SHUT_RDWR);
  }
}

}  // namespace perch::mqtt
