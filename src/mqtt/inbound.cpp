#include "mqtt/inbound.h"

#include <fmt/format.h>

namespace perch::mqtt {
namespace {

// How many of the last accepted requests a redelivery is looked for among.
// Not the Receive Maximum: mosquitto 2.0.11 was seen redelivering 47
// requests to an agent killed with a Receive Maximum of 20. A broker has no
// more unacknowledged messages out than it has packet ids.
constexpr int64_t kRedeliveryWindow = Inbound::kPacketIds;

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

}  // namespace

Inbound::Inbound(TopicLayout layout, const StreamBindings& bindings, DurableQueue& inbox,
                 Session session, uint64_t seed, MetricsRegistry& metrics, Logger logger)
    : layout_(std::move(layout)),
      bindings_(bindings),
      inbox_(inbox),
      session_(session),
      logger_(std::move(logger)),
      received_(
          metrics.GetCounter("perch_mqtt_received_total", "Messages accepted from the broker", {})),
      redelivered_(metrics.GetCounter(
          "perch_mqtt_redelivered_total",
          "Requests the broker sent again that had been accepted already (not answered again)",
          {})),
      random_(seed) {}

void Inbound::NewConnection(bool session_present) {
  session_present_ = session_present;
  ids_seen_.reset();
}

Result<std::optional<QueuedRecord>> Inbound::Accept(const IncomingMessage& message) {
  InboundRequest request{.topic = message.topic,
                         .model = {},
                         .payload = std::string(message.payload),
                         .response_topic = message.response_topic,
                         .correlation = message.correlation,
                         .stream_output = {}};
  if (auto model = layout_.ModelOfRequest(message.topic)) {
    request.model = std::move(*model);
  } else if (auto binding = bindings_.Find(message.topic)) {
    request.model = std::move(binding->model);
    request.stream_output = std::move(binding->output_topic);
  } else {
    return std::optional<QueuedRecord>();  // a subscription since dropped
  }
  const std::string attributes = EncodeRequestAttributes(request);

  auto accepted = Append(message, request, attributes);
  if (!accepted.ok()) {
    logger_.Error("MQTT: a message on {} could not be accepted: {}", request.topic,
                  accepted.status().message());
    return accepted.status();
  }
  if (accepted->repeat) {
    // Accepted before the agent stopped or the connection dropped, but the
    // broker did not get our acknowledgement: it is in the inbox or already
    // answered, under this key.
    logger_.Debug("MQTT: message {} on {} came again; already accepted as {}", message.message_id,
                  request.topic, accepted->key);
    redelivered_.Increment();
    return std::optional<QueuedRecord>();
  }
  received_.Increment();
  return std::optional(QueuedRecord{.sequence = accepted->sequence,
                                    .destination = request.topic,
                                    .key = std::move(accepted->key),
                                    .payload = std::move(request.payload),
                                    .attributes = attributes,
                                    .created_unix_ms = 0});
}

Result<AppendedRecord> Inbound::Append(const IncomingMessage& message,
                                       const InboundRequest& request,
                                       const std::string& attributes) {
  if (message.qos == 0 || session_ == Session::kEndsWithConnection) {
    // Sent at most once, without a packet id; or on a session no later
    // connection resumes: never redelivered.
    std::string key = NewKey();
    PERCH_ASSIGN_OR_RETURN(const int64_t sequence,
                           inbox_.Append(request.topic, key, request.payload, attributes));
    return AppendedRecord{.sequence = sequence, .key = std::move(key), .repeat = false};
  }
  // The broker redelivers, on a new connection of the same session, what it
  // sent but did not see acknowledged, under the same packet id; and it
  // reuses a packet id for another message only once the first is
  // acknowledged. So a request is taken for a redelivery when, on a resumed
  // session, it is the first this connection brings under its packet id, and
  // the last request accepted under that id had the same topic, payload,
  // response topic and correlation data. libmosquitto does not tell us the
  // DUP flag, which would settle it.
  const auto id = static_cast<size_t>(message.message_id) % kPacketIds;
  const bool first_under_id = !ids_seen_.test(id);
  ids_seen_.set(id);
  // Correlation Data as hex, as the inbox attributes hold it: fingerprints
  // stay comparable with those of requests accepted by earlier versions.
  const uint64_t fingerprint = Fingerprint()
                                   .Add(request.topic)
                                   .Add(request.payload)
                                   .Add(request.response_topic)
                                   .Add(CorrelationHex(request.correlation))
                                   .value();
  return inbox_.AppendClaimed(request.topic, NewKey(), request.payload, attributes,
                              DeliveryClaim{.slot = message.message_id,
                                            .fingerprint = fingerprint,
                                            .may_repeat = session_present_ && first_under_id,
                                            .window = kRedeliveryWindow});
}

void Inbound::Take(const IncomingMessage& message, Connection& connection, RequestLanes& lanes) {
  auto accepted = Accept(message);
  if (!accepted.ok()) {
    if (message.qos > 0) {
      connection.DropBeforeAcknowledging();
    }
  } else if (*accepted) {
    lanes.Dispatch(std::move(**accepted));
  }
}

std::string Inbound::NewKey() { return fmt::format("{:016x}{:016x}", random_(), random_()); }

}  // namespace perch::mqtt
