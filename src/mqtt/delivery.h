// Internal to mqtt/: answers from the outbox to the broker. An answer leaves
// the outbox only once the broker acknowledged it (QoS 1). Answers go in
// outbox order, at most `max_inflight` unacknowledged at once; on every new
// connection whatever was not acknowledged is sent again from the oldest
// (receivers drop repeats by idempotency key).
//
// Acknowledged answers leave the outbox in batches (one disk flush for many),
// and only after the inbox's unsynced removals are flushed: the lanes remove
// answered requests from the inbox without a flush of their own, and a power
// loss must not bring back a request whose answer was delivered.
//
// Threading: thread-safe. The lanes call PublishAnswer; the connection's
// network thread calls OnPublished, Restart and Wake; a delivery thread of its
// own (Start/Stop, from one controlling thread) removes acknowledged answers
// from the outbox and sends what waits. One mutex guards the delivery state;
// Connection::Publish is called under it, so answers leave in order.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "core/log.h"
#include "core/metrics.h"
#include "mqtt/connection.h"
#include "outbox/durable_queue.h"

namespace perch::mqtt {

class Delivery {
 public:
  // `outbox`, `inbox` and `connection` must outlive the Delivery. `inbox` is
  // where the requests of the answers came from (see above).
  Delivery(DurableQueue& outbox, DurableQueue& inbox, Connection& connection, int max_inflight,
           MetricsRegistry& metrics, Logger logger);
  ~Delivery();
  Delivery(const Delivery&) = delete;
  Delivery& operator=(const Delivery&) = delete;

  void Start();
  void Stop();  // what is not acknowledged stays in the outbox

  // `answer` was just appended to the outbox: sent straight away when it is
  // next in line (reading it back would cost a query per answer), else after
  // whatever waits before it. Nothing is sent while disconnected.
  void PublishAnswer(const QueuedRecord& answer);

  // The broker acknowledged (or refused) `message_id`.
  void OnPublished(int message_id, const Status& outcome);

  // A new connection: nothing is in flight on it, so everything not
  // acknowledged goes again from the oldest. Called before it is used.
  void Restart();

  // Something changed (the connection came or went): look again now.
  void Wake();

 private:
  void Loop();
  // Removes the acknowledged answers from the outbox; releases `lock` (on
  // mutex_) meanwhile.
  void RemoveAcknowledged(std::unique_lock<std::mutex>& lock);
  // Both require mutex_.
  void PublishPendingLocked();
  bool PublishRecordLocked(const QueuedRecord& record);

  DurableQueue& outbox_;
  DurableQueue& inbox_;
  Connection& connection_;
  const int max_inflight_;
  const Logger logger_;
  Counter& delivered_;
  Counter& undeliverable_;

  std::mutex mutex_;
  std::condition_variable wakeup_;
  std::map<int, int64_t> in_flight_;   // MQTT message id -> outbox sequence; guarded by mutex_
  std::vector<int64_t> acknowledged_;  // to remove from the outbox; guarded by mutex_
  // When the oldest of acknowledged_ was acknowledged; guarded by mutex_.
  std::chrono::steady_clock::time_point first_acknowledged_{};
  int64_t last_sent_ = 0;  // outbox sequence; guarded by mutex_
  bool woken_ = false;     // Wake was called; guarded by mutex_
  bool stopping_ = false;  // guarded by mutex_

  std::thread thread_;  // the controlling thread's (Start and Stop)
};

}  // namespace perch::mqtt
