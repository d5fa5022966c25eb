// Internal to mqtt/: a link to the broker. Owns libmosquitto's client:
// connecting with MQTT 5 and a persistent session (or one that ends with the
// connection), reconnecting with backoff and jitter, the last will, leaving a
// shared subscription cleanly, and publishing and subscribing for the other
// parts. What the link brings in goes to a ConnectionListener.
//
// A new libmosquitto client is made for every connection: the library's own
// session would resend, after a reconnect, the answers it still held from the
// last connection, even those the outbox has since expired. So the outbox is
// the only source of resends; the broker's session (subscriptions, requests
// queued while we are away) lives on, under the same client id.
//
// Threading: one network thread (started by Start) runs the link and calls
// every ConnectionListener method. Publish, Subscribe, Unsubscribe and
// connected() may be called from any thread. Start and Stop are called from
// one controlling thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "core/log.h"
#include "core/metrics.h"
#include "core/status.h"
#include "mqtt/backoff.h"
#include "mqtt/mqtt_topics.h"

namespace perch::mqtt {

struct ConnectionOptions {
  BrokerAddress address;
  std::string client_id;
  std::string username;
  std::string password;
  std::string ca_file;     // mqtts: the CA to trust (empty: the system's)
  std::string will_topic;  // where the broker publishes the last will (retained); empty: none
  int keepalive_seconds = 30;
  // false: the session ends with the connection (Session Expiry 0), so the
  // broker keeps no subscription and queues nothing for this client while it
  // is away.
  bool persistent_session = true;
  // A clean Stop first leaves this filter (empty: none): it unsubscribes, then
  // takes in what the broker had already routed to this client, up to a
  // marker it publishes to `leaving_topic` (which it subscribes to), so that
  // nothing routed here is left behind in a session that ends.
  std::string leave_filter;
  std::string leaving_topic;
  std::string metrics_prefix = "perch_mqtt";  // <prefix>_connected, <prefix>_connects_total
  std::string name = "MQTT";                  // in log lines
  std::chrono::milliseconds reconnect_min{250};
  std::chrono::milliseconds reconnect_max{15000};
  // How long a connection attempt waits for the broker's address to answer
  // (tcp_probe.h); then it counts as failed and the backoff retries.
  std::chrono::milliseconds connect_timeout{10000};
  uint64_t seed = 0;  // of the reconnect jitter
};

// A message the broker delivered, with the MQTT 5 properties perch reads.
struct IncomingMessage {
  std::string topic;
  std::string_view payload;  // valid during the OnMessage call only
  int qos = 0;
  int message_id = 0;          // the packet identifier (QoS 1 and 2)
  std::string response_topic;  // empty: none
  std::string correlation;     // Correlation Data, raw bytes; empty: none
};

struct OutgoingMessage {
  std::string_view topic;
  std::string_view payload;
  bool retain = false;
  std::string_view content_type;     // empty: none
  std::string_view idempotency_key;  // as the user property "idempotency-key"; empty: none
  std::string_view correlation;      // Correlation Data, raw bytes; empty: none
};

// Called on the network thread only, never concurrently.
class ConnectionListener {
 public:
  virtual ~ConnectionListener() = default;

  // The broker accepted a connection; connected() is still false, so set-up
  // (subscriptions, the status) goes first. `session_present`: the broker
  // resumed the session, so it may redeliver unacknowledged requests.
  virtual void OnConnected(bool session_present) = 0;
  // connected() changed.
  virtual void OnConnectedChanged(bool connected) = 0;
  // A message, before the broker gets its acknowledgement: once this returns
  // the message counts as taken.
  virtual void OnMessage(const IncomingMessage& message) = 0;
  // The broker's answer to Publish's `message_id`: Ok, or Unavailable with
  // the reason it refused the message.
  virtual void OnPublished(int message_id, const Status& outcome) = 0;
  // The broker's answer to Subscribe's `message_id`: whether it granted the
  // subscription.
  virtual void OnSubscribed(int /*message_id*/, bool /*granted*/) {}
  // Between network operations: every 100 ms or so while connected, and
  // before every connection attempt.
  virtual void OnTick() = 0;
  // The retained status the broker publishes if the link drops (the last
  // will), and that a clean Stop publishes.
  virtual std::string OfflineStatus() = 0;
};

class Connection {
 public:
  // `listener` must outlive the Connection.
  Connection(ConnectionOptions options, ConnectionListener& listener, MetricsRegistry& metrics,
             Logger logger);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Starts connecting in the background. InvalidArgument for TLS settings
  // libmosquitto refuses; Internal when it cannot make a client.
  Status Start();
  // Leaves `leave_filter`, publishes the offline status, disconnects cleanly
  // and joins the network thread.
  void Stop();

  bool connected() const { return connected_; }

  // QoS 1. The message id the broker's PUBACK will carry (OnPublished).
  // Unavailable when there is no connection to publish on (try again once
  // connected); InvalidArgument when no broker will ever take the message (a
  // bad topic, too large).
  Result<int> Publish(const OutgoingMessage& message);
  // QoS 1. The message id the SUBACK will carry (OnSubscribed); 0 without a
  // connection, when nothing is sent: OnConnected is where to subscribe.
  int Subscribe(const std::string& filter);
  void Unsubscribe(const std::string& filter);
  // From OnMessage only: closes the connection before libmosquitto sends
  // the acknowledgement it queued for the message (it queues the PUBACK
  // before calling OnMessage and writes it after), so the broker keeps the
  // message and sends it again on the next connection.
  void DropBeforeAcknowledging();

 private:
  Status ReplaceClient();
  void NetworkLoop();
  void Goodbye();
  void Leave();
  void WaitBeforeRetry(int attempt);
  bool Stopping();
  void SetConnected(bool connected);

  // libmosquitto's callbacks, on the network thread.
  void OnConnect(int rc, int flags);
  void OnDisconnect(int rc);

  // libmosquitto's client and the functions it calls back, defined in the
  // .cpp so that its types stay there.
  class Client;
  struct Callbacks;
  friend struct Callbacks;

  const ConnectionOptions options_;
  ConnectionListener& listener_;
  const Logger logger_;
  Gauge& connected_gauge_;
  Counter& connects_;

  // Written under client_mutex_ only: made by Start, replaced by the network
  // thread on every reconnect, dropped by Stop once that thread has ended. So
  // the network thread may use it without the lock; other threads hold
  // client_mutex_ while they use it.
  std::mutex client_mutex_;
  std::unique_ptr<Client> client_;

  std::mutex stop_mutex_;
  std::condition_variable stop_wakeup_;
  bool stopping_ = false;  // guarded by stop_mutex_

  std::atomic<bool> connected_{false};  // written by the network thread only
  // Leave's marker, and whether it came back; network thread only.
  std::string leaving_marker_;
  bool left_ = false;

  Backoff backoff_;  // network thread only

  // The controlling thread's (Start and Stop).
  bool started_ = false;
  std::thread network_;
};

}  // namespace perch::mqtt
