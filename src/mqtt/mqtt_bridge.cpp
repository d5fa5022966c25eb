#include "mqtt/mqtt_bridge.h"

#include <fmt/format.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>

#include <algorithm>
#include <atomic>
#include <bitset>
#include <charconv>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "mqtt/mqtt_topics.h"
#include "tensor/json_codec.h"

namespace perch {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr int kSessionExpirySeconds = 7 * 24 * 3600;
constexpr size_t kMaxJsonDepth = 64;
constexpr auto kBindingRefresh = std::chrono::seconds(2);
// The most requests we ask the broker to send before we acknowledge them
// (MQTT 5 Receive Maximum).
constexpr int kReceiveMaximum = 20;
constexpr size_t kPacketIds = 65536;
// How many of the last accepted requests a redelivery is looked for among.
// Not kReceiveMaximum: mosquitto 2.0.11 was seen redelivering 47 requests to
// an agent killed with that Receive Maximum. A broker has no more
// unacknowledged messages out than it has packet ids.
constexpr int64_t kRedeliveryWindow = kPacketIds;

// FNV-1a, 64 bits: a fingerprint of a request that is the same in every run,
// unlike std::hash. Each field is preceded by its length, so that moving bytes
// from one field to the next changes it.
class Fingerprint {
 public:
  Fingerprint& Add(std::string_view bytes) {
    const uint64_t size = bytes.size();
    for (size_t i = 0; i < sizeof(size); ++i) {
      Mix(static_cast<unsigned char>(size >> (8 * i)));
    }
    for (const char byte : bytes) {
      Mix(static_cast<unsigned char>(byte));
    }
    return *this;
  }
  uint64_t value() const { return hash_; }

 private:
  void Mix(unsigned char byte) {
    hash_ ^= byte;
    hash_ *= 0x100000001b3ULL;
  }
  uint64_t hash_ = 0xcbf29ce484222325ULL;
};

std::string Hex(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const char byte : bytes) {
    out += fmt::format("{:02x}", static_cast<unsigned char>(byte));
  }
  return out;
}

// The bytes of `hex` (written by Hex); stops at the first pair that is not hex.
std::string Unhex(std::string_view hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    unsigned value = 0;
    const auto [ptr, error] = std::from_chars(hex.data() + i, hex.data() + i + 2, value, 16);
    if (error != std::errc() || ptr != hex.data() + i + 2) {
      break;
    }
    out += static_cast<char>(value);
  }
  return out;
}

bool IsPublishableTopic(const std::string& topic) {
  return !topic.empty() &&
         mosquitto_pub_topic_check2(topic.c_str(), topic.size()) == MOSQ_ERR_SUCCESS;
}

// `body` (a JSON object) with the idempotency key as its first member.
std::string WithKey(std::string body, std::string_view key) {
  body.insert(1,
              fmt::format("\"idempotency_key\":{}{}", JsonQuote(key), body.size() > 2 ? "," : ""));
  return body;
}

std::string ErrorBody(const std::string& message, const std::string& model,
                      const std::string& topic, const std::string& id) {
  json body = {{"error", message}, {"model_name", model}, {"topic", topic}};
  if (!id.empty()) {
    body["id"] = id;
  }
  return body.dump(-1, ' ', false, json::error_handler_t::replace);
}

// One processing lane: the messages of the topics hashed to it, in order.
struct Lane {
  std::mutex mutex;
  std::condition_variable wakeup;
  std::deque<QueuedRecord> records;  // guarded by mutex
  std::thread thread;
};

struct StreamBinding {
  std::string model;
  std::string output_topic;
};

}  // namespace

class MqttBridge::Impl {
 public:
  Impl(const MqttOptions& options, mqtt::BrokerAddress address, const InferenceService& inference,
       const ModelManager& models, DurableQueue& inbox, DurableQueue& outbox,
       MetricsRegistry& metrics, Logger logger)
      : options_(options),
        address_(std::move(address)),
        layout_(options.prefix, options.location, options.device),
        client_id_(fmt::format("perch-{}-{}", options.location, options.device)),
        inference_(inference),
        models_(models),
        inbox_(inbox),
        outbox_(outbox),
        logger_(std::move(logger)),
        random_(std::random_device{}()),
        connected_gauge_(
            metrics.GetGauge("perch_mqtt_connected", "1 while connected to the broker", {})),
        connects_(
            metrics.GetCounter("perch_mqtt_connects_total", "Connections made to the broker", {})),
        received_(metrics.GetCounter("perch_mqtt_received_total",
                                     "Messages accepted from the broker", {})),
        redelivered_(metrics.GetCounter(
            "perch_mqtt_redelivered_total",
            "Requests the broker sent again that had been accepted already (not answered again)",
            {})),
        delivered_(metrics.GetCounter("perch_mqtt_delivered_total",
                                      "Messages the broker acknowledged", {})),
        undeliverable_(metrics.GetCounter("perch_mqtt_undeliverable_total",
                                          "Records dropped because no broker would take them", {})),
        lanes_(static_cast<size_t>(std::max(1, options.lanes))) {}

  ~Impl() { Stop(); }

  Status Start() {
    mosquitto_lib_init();
    // The bindings first: the will repeats the status, model list included.
    RefreshBindings();
    PERCH_RETURN_IF_ERROR(ReplaceClient());

    for (size_t i = 0; i < lanes_.size(); ++i) {
      lanes_[i].thread = std::thread([this, i] { LaneLoop(lanes_[i]); });
    }
    PERCH_RETURN_IF_ERROR(ResumeInbox());
    network_ = std::thread([this] { NetworkLoop(); });
    delivery_ = std::thread([this] { DeliveryLoop(); });
    logger_.Info("MQTT: connecting to {}:{} as {} (location {}, device {})", address_.host,
                 address_.port, client_id_, options_.location, options_.device);
    return Status::Ok();
  }

  // A new client for every connection: libmosquitto's own session would
  // resend after a reconnect the answers it still held from the last
  // connection, even those the outbox has since expired. So the outbox is the
  // only source of resends; the broker's session (subscriptions, requests
  // queued while we are away) lives on, under the same client id.
  Status ReplaceClient() {
    mosquitto* client = mosquitto_new(client_id_.c_str(), /*clean_session=*/false, this);
    if (!client) {
      return Internal("cannot create the MQTT client");
    }
    mosquitto_int_option(client, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    mosquitto_int_option(client, MOSQ_OPT_RECEIVE_MAXIMUM, kReceiveMaximum);
    // Answers are small packets sent right after a PUBACK: without this the
    // kernel holds each one until the broker's delayed ACK, about 40 ms.
    mosquitto_int_option(client, MOSQ_OPT_TCP_NODELAY, 1);
    // Our own threads call publish while the network thread runs the loop.
    mosquitto_threaded_set(client, true);
    mosquitto_connect_v5_callback_set(
        client, [](mosquitto*, void* self, int rc, int flags, const mosquitto_property*) {
          static_cast<Impl*>(self)->OnConnect(rc, flags);
        });
    mosquitto_disconnect_v5_callback_set(
        client, [](mosquitto*, void* self, int rc, const mosquitto_property*) {
          static_cast<Impl*>(self)->OnDisconnect(rc);
        });
    mosquitto_message_v5_callback_set(client,
                                      [](mosquitto*, void* self, const mosquitto_message* message,
                                         const mosquitto_property* properties) {
                                        static_cast<Impl*>(self)->OnMessage(*message, properties);
                                      });
    mosquitto_publish_v5_callback_set(
        client, [](mosquitto*, void* self, int mid, int reason, const mosquitto_property*) {
          static_cast<Impl*>(self)->OnPublished(mid, reason);
        });
    if (!options_.username.empty()) {
      mosquitto_username_pw_set(client, options_.username.c_str(),
                                options_.password.empty() ? nullptr : options_.password.c_str());
    }
    if (address_.tls) {
      const int rc = mosquitto_tls_set(
          client, options_.ca_file.empty() ? nullptr : options_.ca_file.c_str(),
          options_.ca_file.empty() ? "/etc/ssl/certs" : nullptr, nullptr, nullptr, nullptr);
      if (rc != MOSQ_ERR_SUCCESS) {
        mosquitto_destroy(client);
        return InvalidArgument(
            fmt::format("cannot use the MQTT TLS settings: {}", mosquitto_strerror(rc)));
      }
    }
    const std::string offline = StatusBody("offline");
    mosquitto_will_set_v5(client, layout_.Status().c_str(), static_cast<int>(offline.size()),
                          offline.data(), 1, true, nullptr);
    {
      std::lock_guard lock(client_mutex_);
      std::swap(mosq_, client);
    }
    if (client) {
      mosquitto_destroy(client);
    }
    return Status::Ok();
  }

  void Stop() {
    if (!mosq_) {
      return;
    }
    {
      std::lock_guard lock(stop_mutex_);
      stopping_ = true;
    }
    stop_wakeup_.notify_all();
    for (auto& lane : lanes_) {
      lane.wakeup.notify_all();
    }
    delivery_wakeup_.notify_all();
    for (auto& lane : lanes_) {
      if (lane.thread.joinable()) {
        lane.thread.join();
      }
    }
    if (delivery_.joinable()) {
      delivery_.join();
    }
    if (network_.joinable()) {
      network_.join();
    }
    mosquitto_destroy(mosq_);
    mosq_ = nullptr;
    mosquitto_lib_cleanup();
  }

 private:
  // --- network thread -------------------------------------------------------

  void NetworkLoop() {
    int attempt = 0;
    bool socket_open = false;
    bool fresh_client = true;  // the one Start made
    while (!Stopping()) {
      if (!socket_open) {
        if (!fresh_client) {
          if (const Status replaced = ReplaceClient(); !replaced.ok()) {
            logger_.Error("MQTT: {}", replaced.message());
            Backoff(attempt++);
            continue;
          }
        }
        fresh_client = false;
        mosquitto_property* properties = nullptr;
        mosquitto_property_add_int32(&properties, MQTT_PROP_SESSION_EXPIRY_INTERVAL,
                                     kSessionExpirySeconds);
        const int rc = mosquitto_connect_bind_v5(mosq_, address_.host.c_str(), address_.port,
                                                 options_.keepalive_seconds, nullptr, properties);
        mosquitto_property_free_all(&properties);
        if (rc != MOSQ_ERR_SUCCESS) {
          if (attempt == 0 || attempt % 10 == 0) {
            logger_.Warn("MQTT: cannot reach {}:{} ({}); retrying", address_.host, address_.port,
                         rc == MOSQ_ERR_ERRNO ? std::strerror(errno) : mosquitto_strerror(rc));
          }
          Backoff(attempt++);
          continue;
        }
        socket_open = true;
      }
      const int rc = mosquitto_loop(mosq_, 100, 1);
      if (rc == MOSQ_ERR_SUCCESS) {
        if (connected_) {
          attempt = 0;
        }
        continue;
      }
      socket_open = false;
      SetConnected(false);
      Backoff(attempt++);
    }
    if (socket_open && connected_) {
      // A clean goodbye: the status says offline, then the session pauses.
      const std::string offline = StatusBody("offline");
      mosquitto_publish_v5(mosq_, nullptr, layout_.Status().c_str(),
                           static_cast<int>(offline.size()), offline.data(), 1, true, nullptr);
      mosquitto_disconnect_v5(mosq_, MQTT_RC_NORMAL_DISCONNECTION, nullptr);
      for (int i = 0; i < 10 && mosquitto_loop(mosq_, 50, 1) == MOSQ_ERR_SUCCESS; ++i) {
      }
    }
  }

  // Waits min * 2^attempt, capped, with jitter, so that a fleet reconnecting
  // after a broker restart does not arrive all at once.
  void Backoff(int attempt) {
    const auto base = options_.reconnect_min * (1LL << std::min(attempt, 16));
    const auto capped = std::min<std::chrono::milliseconds>(base, options_.reconnect_max);
    std::uniform_int_distribution<int64_t> jitter(capped.count() / 2,
                                                  std::max<int64_t>(capped.count(), 1));
    const auto delay = std::chrono::milliseconds(jitter(random_));
    std::unique_lock lock(stop_mutex_);
    stop_wakeup_.wait_for(lock, delay, [this] { return stopping_; });
  }

  void OnConnect(int rc, int flags) {
    if (rc != 0) {
      logger_.Error("MQTT: {}:{} refused the connection: {}", address_.host, address_.port,
                    mosquitto_reason_string(rc));
      mosquitto_disconnect(mosq_);
      return;
    }
    connects_.Increment();
    // Without a session the broker redelivers nothing from before.
    session_present_ = (flags & 1) != 0;
    ids_seen_.reset();
    logger_.Info("MQTT: connected to {}:{}{}", address_.host, address_.port,
                 session_present_ ? "" : " (new session)");
    const std::string device = layout_.DeviceRequests();
    const std::string location = layout_.LocationRequests();
    mosquitto_subscribe_v5(mosq_, nullptr, device.c_str(), 1, 0, nullptr);
    mosquitto_subscribe_v5(mosq_, nullptr, location.c_str(), 1, 0, nullptr);
    {
      std::lock_guard lock(bindings_mutex_);
      for (const auto& [filter, binding] : bindings_) {
        mosquitto_subscribe_v5(mosq_, nullptr, filter.c_str(), 1, 0, nullptr);
      }
    }
    PublishStatus();
    {
      // Whatever was in flight before is sent again from the oldest record:
      // the broker may not have it, and receivers drop repeats by key.
      std::lock_guard lock(delivery_mutex_);
      in_flight_.clear();
      last_sent_ = 0;
    }
    SetConnected(true);
  }

  void OnDisconnect(int rc) {
    if (rc != 0 && !Stopping()) {
      logger_.Warn("MQTT: connection to {}:{} lost ({}); reconnecting", address_.host,
                   address_.port, mosquitto_strerror(rc));
    }
    SetConnected(false);
  }

  void SetConnected(bool connected) {
    connected_ = connected;
    connected_gauge_.Set(connected ? 1 : 0);
    delivery_wakeup_.notify_all();
  }

  // Runs on the network thread, before the broker gets its PUBACK: once this
  // returns, the message is on disk.
  void OnMessage(const mosquitto_message& message, const mosquitto_property* properties) {
    const std::string topic = message.topic;
    json attributes = {{"topic", topic}};
    if (const auto model = layout_.ModelOfRequest(topic)) {
      attributes["model"] = *model;
    } else if (const auto binding = FindBinding(topic)) {
      attributes["model"] = binding->model;
      attributes["stream_output"] = binding->output_topic;
    } else {
      return;  // a subscription since dropped
    }
    char* response_topic = nullptr;
    if (mosquitto_property_read_string(properties, MQTT_PROP_RESPONSE_TOPIC, &response_topic,
                                       false)) {
      attributes["response_topic"] = response_topic;
      free(response_topic);
    }
    void* correlation = nullptr;
    uint16_t correlation_length = 0;
    if (mosquitto_property_read_binary(properties, MQTT_PROP_CORRELATION_DATA, &correlation,
                                       &correlation_length, false)) {
      attributes["correlation"] = Hex({static_cast<const char*>(correlation), correlation_length});
      free(correlation);
    }
    const std::string_view payload(static_cast<const char*>(message.payload),
                                   static_cast<size_t>(message.payloadlen));
    const auto accepted = Accept(message, topic, payload, attributes);
    if (!accepted.ok()) {
      logger_.Error("MQTT: a message on {} could not be accepted: {}", topic,
                    accepted.status().message());
      return;
    }
    if (accepted->repeat) {
      // Accepted before the agent stopped or the connection dropped, but the
      // broker did not get our acknowledgement: it is in the inbox or already
      // answered, under this key.
      logger_.Debug("MQTT: message {} on {} came again; already accepted as {}", message.mid, topic,
                    accepted->key);
      redelivered_.Increment();
      return;
    }
    const std::string key = accepted->key;
    const int64_t sequence = accepted->sequence;
    received_.Increment();
    Dispatch(QueuedRecord{.sequence = sequence,
                          .destination = topic,
                          .key = key,
                          .payload = std::string(payload),
                          .attributes = attributes.dump(),
                          .created_unix_ms = 0});
  }

  // Writes a request to the inbox, unless it is a redelivery of one accepted
  // before. The broker redelivers, on a new connection of the same session,
  // what it sent but did not see acknowledged, under the same packet id; and
  // it reuses a packet id for another message only once the first is
  // acknowledged. So a request is taken for a redelivery when, on a resumed
  // session, it is the first this connection brings under its packet id, and
  // the last request accepted under that id had the same topic, payload,
  // response topic and correlation data. libmosquitto does not tell us the
  // DUP flag, which would settle it.
  Result<AppendedRecord> Accept(const mosquitto_message& message, const std::string& topic,
                                std::string_view payload, const json& attributes) {
    if (message.qos == 0) {
      // Sent at most once: never redelivered, and without a packet id.
      std::string key = NewKey();
      PERCH_ASSIGN_OR_RETURN(const int64_t sequence,
                             inbox_.Append(topic, key, payload, attributes.dump()));
      return AppendedRecord{.sequence = sequence, .key = std::move(key), .repeat = false};
    }
    const auto id = static_cast<size_t>(message.mid) % kPacketIds;
    const bool first_under_id = !ids_seen_.test(id);
    ids_seen_.set(id);
    const uint64_t fingerprint = Fingerprint()
                                     .Add(topic)
                                     .Add(payload)
                                     .Add(attributes.value("response_topic", ""))
                                     .Add(attributes.value("correlation", ""))
                                     .value();
    return inbox_.AppendClaimed(topic, NewKey(), payload, attributes.dump(),
                                DeliveryClaim{.slot = message.mid,
                                              .fingerprint = fingerprint,
                                              .may_repeat = session_present_ && first_under_id,
                                              .window = kRedeliveryWindow});
  }

  void OnPublished(int mid, int reason) {
    std::lock_guard lock(delivery_mutex_);
    const auto it = in_flight_.find(mid);
    if (it == in_flight_.end()) {
      return;  // from before a reconnect, or the status
    }
    if (reason >= 0x80) {
      logger_.Error("MQTT: the broker refused record {}: {}; dropping it", it->second,
                    mosquitto_reason_string(reason));
      undeliverable_.Increment();
    } else {
      delivered_.Increment();
    }
    acknowledged_.push_back(it->second);
    in_flight_.erase(it);
    delivery_wakeup_.notify_all();
  }

  // --- lanes ----------------------------------------------------------------

  // Messages accepted before a restart are processed first.
  Status ResumeInbox() {
    int64_t after = 0;
    while (true) {
      PERCH_ASSIGN_OR_RETURN(auto records, inbox_.Read(after, 1000));
      if (records.empty()) {
        break;
      }
      after = records.back().sequence;
      for (auto& record : records) {
        Dispatch(std::move(record));
      }
    }
    return Status::Ok();
  }

  void Dispatch(QueuedRecord record) {
    Lane& lane = lanes_[std::hash<std::string>{}(record.destination) % lanes_.size()];
    {
      std::lock_guard lock(lane.mutex);
      lane.records.push_back(std::move(record));
    }
    lane.wakeup.notify_one();
  }

  void LaneLoop(Lane& lane) {
    while (true) {
      QueuedRecord record;
      {
        std::unique_lock lock(lane.mutex);
        lane.wakeup.wait(lock, [&] { return Stopping() || !lane.records.empty(); });
        if (Stopping()) {
          return;  // the rest stays in the inbox for the next start
        }
        record = std::move(lane.records.front());
        lane.records.pop_front();
      }
      try {
        Process(record);
      } catch (const std::exception& error) {
        // A record that cannot be handled (a damaged database) must not stop
        // the lane: it is dropped, loudly.
        logger_.Error("MQTT: message {} on {} could not be processed ({}); dropping it",
                      record.sequence, record.destination, error.what());
        (void)inbox_.Remove({record.sequence});
      }
    }
  }

  void Process(const QueuedRecord& record) {
    json attributes = json::parse(record.attributes, nullptr, false);
    if (!attributes.is_object()) {
      attributes = json::object();
    }
    const std::string topic = attributes.value("topic", record.destination);
    const std::string model = attributes.value("model", "");
    std::string destination = attributes.value("response_topic", "");
    std::string body;

    auto decoded = DecodeJsonInferRequest(record.payload, "", kMaxJsonDepth);
    std::string id = decoded.ok() ? decoded->request.id : "";
    if (destination.empty() && decoded.ok()) {
      destination = decoded->reply_to;
    } else if (!decoded.ok()) {
      // A request that is not a valid infer request may still say where its
      // error should go.
      const json request = json::parse(record.payload, nullptr, false);
      if (request.is_object()) {
        if (destination.empty() && request.contains("reply_to") &&
            request["reply_to"].is_string()) {
          destination = request["reply_to"].get<std::string>();
        }
        if (request.contains("id") && request["id"].is_string()) {
          id = request["id"].get<std::string>();
        }
      }
    }
    if (!destination.empty() && !IsPublishableTopic(destination)) {
      body =
          ErrorBody(fmt::format("\"{}\" is not a topic an answer can be published to", destination),
                    model, topic, id);
      destination = layout_.Errors();
    } else if (!decoded.ok()) {
      body = ErrorBody(decoded.status().message(), model, topic, id);
      destination = destination.empty() ? layout_.Errors() : destination;
    } else {
      bool failed = false;
      body = Answer(*decoded, model, topic, failed);
      if (destination.empty() && failed) {
        destination = layout_.Errors();
      } else if (destination.empty()) {
        const std::string stream_output = attributes.value("stream_output", "");
        destination = stream_output.empty() ? layout_.Results(model) : stream_output;
      }
    }
    json out_attributes = json::object();
    if (attributes.contains("correlation")) {
      out_attributes["correlation"] = attributes["correlation"];
    }
    // The answer's key comes from the message: answering it again after a
    // crash repeats the key, so receivers can drop the repeat.
    const std::string key = fmt::format("{}/{}", client_id_, record.key);
    QueuedRecord answer{.sequence = 0,
                        .destination = std::move(destination),
                        .key = key,
                        .payload = WithKey(std::move(body), key),
                        .attributes = out_attributes.dump(),
                        .created_unix_ms = 0};
    const auto appended =
        outbox_.Append(answer.destination, answer.key, answer.payload, answer.attributes);
    if (!appended.ok()) {
      logger_.Error("MQTT: the answer to a message on {} was dropped: {}", topic,
                    appended.status().message());
    } else if (connected_) {
      // Sent from here rather than by waking the delivery thread: one thread
      // hand-off less per answer. The answer is on disk already, so the
      // request may leave the inbox after.
      answer.sequence = *appended;
      PublishAnswer(answer);
    }
    if (const Status removed = inbox_.Remove({record.sequence}); !removed.ok()) {
      logger_.Error("MQTT: {}", removed.message());
    }
  }

  // The answer body; `failed` tells whether it is an error.
  std::string Answer(JsonInferRequest& decoded, const std::string& model, const std::string& topic,
                     bool& failed) {
    decoded.request.model_name = model;
    const std::string id = decoded.request.id;
    const auto result = inference_.Infer(std::move(decoded.request));
    failed = !result.ok();
    if (failed) {
      return ErrorBody(result.status().message(), model, topic, id);
    }
    // Answers are JSON documents: binary output parameters do not apply.
    JsonInferRequest as_json;
    auto encoded = EncodeJsonInferResponse(*result, as_json);
    failed = !encoded.ok();
    return encoded.ok() ? std::move(encoded->body)
                        : ErrorBody(encoded.status().message(), model, topic, id);
  }

  // --- delivery thread -------------------------------------------------------

  void DeliveryLoop() {
    auto next_refresh = Clock::now() + kBindingRefresh;
    while (!Stopping()) {
      std::vector<int64_t> acknowledged;
      {
        std::unique_lock lock(delivery_mutex_);
        delivery_wakeup_.wait_for(lock, std::chrono::milliseconds(200));
        acknowledged.swap(acknowledged_);
      }
      if (!acknowledged.empty()) {
        if (const Status removed = outbox_.Remove(acknowledged); !removed.ok()) {
          logger_.Error("MQTT: {}", removed.message());
        }
      }
      if (connected_) {
        PublishPending();
      }
      if (Clock::now() >= next_refresh) {
        next_refresh = Clock::now() + kBindingRefresh;
        if (RefreshBindings()) {
          PublishStatus();
        }
      }
    }
  }

  // Publishes what the outbox holds past the last record sent, oldest first.
  void PublishPending() {
    std::lock_guard lock(delivery_mutex_);
    PublishPendingLocked();
  }

  // Publishes `answer`, just appended to the outbox: straight away when it is
  // next in line (reading it back would cost a query per answer), else after
  // whatever waits before it.
  void PublishAnswer(const QueuedRecord& answer) {
    std::lock_guard lock(delivery_mutex_);
    if (answer.sequence == last_sent_ + 1 &&
        static_cast<int>(in_flight_.size()) < options_.max_inflight) {
      PublishRecord(answer);
    } else {
      PublishPendingLocked();
    }
  }

  // Requires delivery_mutex_.
  void PublishPendingLocked() {
    const auto room = static_cast<size_t>(
        std::max(0, options_.max_inflight - static_cast<int>(in_flight_.size())));
    if (room == 0) {
      return;
    }
    const auto records = outbox_.Read(last_sent_, room);
    if (!records.ok()) {
      logger_.Error("MQTT: {}", records.status().message());
      return;
    }
    for (const auto& record : *records) {
      if (!PublishRecord(record)) {
        return;  // again once connected
      }
    }
  }

  // Requires delivery_mutex_. False when there is no connection to publish on.
  bool PublishRecord(const QueuedRecord& record) {
    const json attributes = json::parse(record.attributes, nullptr, false);
    mosquitto_property* properties = nullptr;
    mosquitto_property_add_string(&properties, MQTT_PROP_CONTENT_TYPE, "application/json");
    mosquitto_property_add_string_pair(&properties, MQTT_PROP_USER_PROPERTY, "idempotency-key",
                                       record.key.c_str());
    if (attributes.is_object() && attributes.contains("correlation") &&
        attributes["correlation"].is_string()) {
      const std::string correlation = Unhex(attributes["correlation"].get<std::string>());
      mosquitto_property_add_binary(&properties, MQTT_PROP_CORRELATION_DATA, correlation.data(),
                                    static_cast<uint16_t>(correlation.size()));
    }
    int mid = 0;
    int rc = MOSQ_ERR_NO_CONN;
    {
      std::lock_guard client_lock(client_mutex_);
      rc = mosquitto_publish_v5(mosq_, &mid, record.destination.c_str(),
                                static_cast<int>(record.payload.size()), record.payload.data(), 1,
                                false, properties);
    }
    mosquitto_property_free_all(&properties);
    if (rc == MOSQ_ERR_SUCCESS) {
      in_flight_[mid] = record.sequence;
      last_sent_ = record.sequence;
      return true;
    }
    if (rc == MOSQ_ERR_NO_CONN || rc == MOSQ_ERR_CONN_LOST || rc == MOSQ_ERR_NOMEM) {
      return false;
    }
    // The broker will never take this one (bad topic, too large): drop it
    // rather than block everything behind it.
    logger_.Error("MQTT: record {} for {} cannot be published ({}); dropping it", record.sequence,
                  record.destination, mosquitto_strerror(rc));
    undeliverable_.Increment();
    acknowledged_.push_back(record.sequence);
    last_sent_ = record.sequence;
    delivery_wakeup_.notify_all();  // to remove it from the outbox
    return true;
  }

  // --- bindings and status ----------------------------------------------------

  // Reads the event-stream bindings of the models being served; true when
  // they (or the set of models) changed.
  bool RefreshBindings() {
    std::map<std::string, StreamBinding> bindings;
    std::vector<std::string> names;
    for (const auto& model : models_.ServedModels()) {
      names.push_back(model->name());
      if (model->config().mqtt) {
        bindings[model->config().mqtt->input_topic] =
            StreamBinding{model->name(), model->config().mqtt->output_topic};
      }
    }
    std::lock_guard lock(bindings_mutex_);
    if (bindings.size() == bindings_.size() &&
        std::equal(bindings.begin(), bindings.end(), bindings_.begin(),
                   [](const auto& a, const auto& b) {
                     return a.first == b.first && a.second.model == b.second.model &&
                            a.second.output_topic == b.second.output_topic;
                   }) &&
        names == model_names_) {
      return false;
    }
    if (connected_) {
      std::lock_guard client_lock(client_mutex_);
      for (const auto& [filter, binding] : bindings_) {
        if (!bindings.contains(filter)) {
          mosquitto_unsubscribe_v5(mosq_, nullptr, filter.c_str(), nullptr);
        }
      }
      for (const auto& [filter, binding] : bindings) {
        if (!bindings_.contains(filter)) {
          mosquitto_subscribe_v5(mosq_, nullptr, filter.c_str(), 1, 0, nullptr);
        }
      }
    }
    bindings_ = std::move(bindings);
    model_names_ = std::move(names);
    return true;
  }

  std::optional<StreamBinding> FindBinding(const std::string& topic) {
    std::lock_guard lock(bindings_mutex_);
    for (const auto& [filter, binding] : bindings_) {
      bool matches = false;
      if (mosquitto_topic_matches_sub(filter.c_str(), topic.c_str(), &matches) ==
              MOSQ_ERR_SUCCESS &&
          matches) {
        return binding;
      }
    }
    return std::nullopt;
  }

  std::string StatusBody(std::string_view state) {
    std::lock_guard lock(bindings_mutex_);
    return json{{"state", state},
                {"location", options_.location},
                {"device", options_.device},
                {"version", options_.server_version},
                {"models", model_names_}}
        .dump();
  }

  void PublishStatus() {
    const std::string online = StatusBody("online");
    std::lock_guard lock(client_mutex_);
    mosquitto_publish_v5(mosq_, nullptr, layout_.Status().c_str(), static_cast<int>(online.size()),
                         online.data(), 1, true, nullptr);
  }

  std::string NewKey() {
    std::lock_guard lock(random_mutex_);
    return fmt::format("{:016x}{:016x}", random_(), random_());
  }

  bool Stopping() {
    std::lock_guard lock(stop_mutex_);
    return stopping_;
  }

  const MqttOptions options_;
  const mqtt::BrokerAddress address_;
  const mqtt::TopicLayout layout_;
  const std::string client_id_;
  const InferenceService& inference_;
  const ModelManager& models_;
  DurableQueue& inbox_;
  DurableQueue& outbox_;
  const Logger logger_;

  std::mutex random_mutex_;
  std::mt19937_64 random_;  // guarded by random_mutex_

  Gauge& connected_gauge_;
  Counter& connects_;
  Counter& received_;
  Counter& redelivered_;
  Counter& delivered_;
  Counter& undeliverable_;

  // Replaced only by the network thread (ReplaceClient), under client_mutex_;
  // other threads hold client_mutex_ while they use it.
  std::mutex client_mutex_;
  mosquitto* mosq_ = nullptr;
  std::atomic<bool> connected_{false};
  // Network thread only: whether the broker resumed our session, and the
  // packet ids the current connection has brought requests under.
  bool session_present_ = false;
  std::bitset<kPacketIds> ids_seen_;

  std::mutex stop_mutex_;
  std::condition_variable stop_wakeup_;
  bool stopping_ = false;  // guarded by stop_mutex_

  std::mutex bindings_mutex_;
  std::map<std::string, StreamBinding> bindings_;  // guarded by bindings_mutex_
  std::vector<std::string> model_names_;           // guarded by bindings_mutex_

  std::mutex delivery_mutex_;
  std::condition_variable delivery_wakeup_;
  std::map<int, int64_t> in_flight_;   // MQTT message id -> outbox sequence; guarded
  std::vector<int64_t> acknowledged_;  // guarded by delivery_mutex_
  int64_t last_sent_ = 0;              // guarded by delivery_mutex_

  std::vector<Lane> lanes_;
  std::thread network_;
  std::thread delivery_;
};

Result<std::unique_ptr<MqttBridge>> MqttBridge::Create(const MqttOptions& options,
                                                       const InferenceService& inference,
                                                       const ModelManager& models,
                                                       DurableQueue& inbox, DurableQueue& outbox,
                                                       MetricsRegistry& metrics, Logger logger) {
  PERCH_ASSIGN_OR_RETURN(auto address, mqtt::ParseBrokerUrl(options.url));
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
  return std::unique_ptr<MqttBridge>(new MqttBridge(std::make_unique<Impl>(
      options, std::move(address), inference, models, inbox, outbox, metrics, std::move(logger))));
}

MqttBridge::MqttBridge(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MqttBridge::~MqttBridge() = default;
Status MqttBridge::Start() { return impl_->Start(); }
void MqttBridge::Stop() { impl_->Stop(); }

}  // namespace perch
