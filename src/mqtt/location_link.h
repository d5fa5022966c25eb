// Internal to mqtt/: the location's requests, on a link of their own. The
// agents of a location share one subscription to <prefix>/<location>/infer/+
// and the broker gives each request to one member. Membership belongs to a
// session: held by the agent's persistent session, it outlives the agent, and
// mosquitto 2.0 goes on routing every second request to the departed agent's
// session, where it waits until that agent comes back. So the shared
// subscription lives on a second connection whose session ends with it
// (Session Expiry 0), under the client id "<agent's client id>/location":
//   - a clean Stop leaves first: it unsubscribes, takes in what the broker had
//     already routed here (Connection::Leave), then disconnects;
//   - when the agent dies, the broker ends the session as soon as it notices
//     (at once for a killed process, after 1.5 keepalives for a host that went
//     silent), and routes later requests to the members left.
// A request the broker had sent here but not yet had acknowledged when the
// agent died ends with the session (mosquitto does not pass it on); one that
// was acknowledged is in the inbox and is answered after a restart.
//
// Threading: the link's network thread calls the ConnectionListener methods
// (Inbound is used there only); answered() may be read from any thread;
// Start and Stop are called from one controlling thread.
#pragma once

#include <atomic>

#include "core/log.h"
#include "core/metrics.h"
#include "core/status.h"
#include "mqtt/connection.h"
#include "mqtt/inbound.h"
#include "mqtt/mqtt_topics.h"
#include "mqtt/request_lanes.h"
#include "mqtt/stream_bindings.h"
#include "outbox/durable_queue.h"

namespace perch::mqtt {

class LocationLink final : public ConnectionListener {
 public:
  // The keepalive of the link: a host that goes silent leaves the location
  // after 1.5 times this (the broker's limit), docs/mqtt.md.
  static constexpr int kKeepaliveSeconds = 5;

  // `agent` is the agent's own connection's options (broker, credentials,
  // client id, reconnects); every reference must outlive the LocationLink.
  LocationLink(const ConnectionOptions& agent, const TopicLayout& layout, DurableQueue& inbox,
               RequestLanes& lanes, uint64_t seed, MetricsRegistry& metrics, Logger logger);

  // The errors of Connection::Start.
  Status Start();
  // Leaves the location's subscription, then disconnects. The lanes must
  // still run: what it takes in while leaving is answered.
  void Stop();

  // Whether the broker answered the location's subscription on the current
  // connection (granted, or refused and logged): until then the location's
  // requests go to the other agents.
  bool answered() const { return answered_; }

 private:
  void OnConnected(bool session_present) override;
  void OnConnectedChanged(bool connected) override;
  void OnMessage(const IncomingMessage& message) override;
  void OnPublished(int message_id, const Status& outcome) override;
  void OnSubscribed(int message_id, bool granted) override;
  void OnTick() override;
  std::string OfflineStatus() override;

  const std::string filter_;
  const Logger logger_;
  RequestLanes& lanes_;
  // None: this link carries the location's requests only.
  const StreamBindings no_bindings_;
  Connection connection_;
  Inbound inbound_;
  int subscription_ = 0;  // the SUBSCRIBE's message id; network thread only
  std::atomic<bool> answered_{false};
};

}  // namespace perch::mqtt
