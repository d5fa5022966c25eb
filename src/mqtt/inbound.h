// Internal to mqtt/: taking requests in. Every request the broker delivers is
// written to the inbox before the broker gets its acknowledgement, under a
// new random idempotency key, unless it is a redelivery of a request
// accepted before (docs/mqtt.md, "What counts as a redelivery"). Only a
// persistent session redelivers: the Inbound of a session that ends with its
// connection never looks for repeats, and never records packet ids, which
// would overwrite those the persistent session's redeliveries are
// recognised by (both write one inbox).
//
// Threading: not thread-safe; one owner. The bridge calls it on the
// connection's network thread only, so its state (the packet ids seen, the
// random source) needs no lock.
#pragma once

#include <bitset>
#include <cstdint>
#include <optional>
#include <random>
#include <string>

#include "core/log.h"
#include "core/metrics.h"
#include "mqtt/connection.h"
#include "mqtt/mqtt_topics.h"
#include "mqtt/request_answer.h"
#include "mqtt/request_lanes.h"
#include "mqtt/stream_bindings.h"
#include "outbox/durable_queue.h"

namespace perch::mqtt {

class Inbound {
 public:
  enum class Session { kPersistent, kEndsWithConnection };

  // `bindings` and `inbox` must outlive the Inbound; `seed` is of the keys.
  Inbound(TopicLayout layout, const StreamBindings& bindings, DurableQueue& inbox, Session session,
          uint64_t seed, MetricsRegistry& metrics, Logger logger);

  // A new connection began; `session_present`: the broker resumed the
  // session, so it may redeliver requests accepted on an earlier one.
  void NewConnection(bool session_present);

  // The inbox record of `message`, to process. nullopt for a message on no
  // request topic or binding (a subscription since dropped) or a
  // redelivery. An error (logged) when the inbox could not take it (a full
  // or failing disk): the broker must not get its acknowledgement.
  Result<std::optional<QueuedRecord>> Accept(const IncomingMessage& message);

  // For a connection listener's OnMessage: Accept, then the record to
  // `lanes`; or, when the inbox could not take a QoS 1 request, `connection`
  // dropped before the request's acknowledgement leaves.
  void Take(const IncomingMessage& message, Connection& connection, RequestLanes& lanes);

  static constexpr size_t kPacketIds = 65536;

 private:
  Result<AppendedRecord> Append(const IncomingMessage& message, const InboundRequest& request,
                                const std::string& attributes);
  std::string NewKey();

  const TopicLayout layout_;
  const StreamBindings& bindings_;
  DurableQueue& inbox_;
  const Session session_;
  const Logger logger_;
  Counter& received_;
  Counter& redelivered_;

  std::mt19937_64 random_;
  // Whether the broker resumed our session, and the packet ids the current
  // connection has brought requests under.
  bool session_present_ = false;
  std::bitset<kPacketIds> ids_seen_;
};

}  // namespace perch::mqtt
