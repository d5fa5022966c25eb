#include "mqtt/delivery.h"

#include <algorithm>
#include <chrono>

#include "mqtt/request_answer.h"

namespace perch::mqtt {
namespace {

// Also how soon answers written while disconnected go out once connected,
// should a wakeup be missed.
constexpr auto kPollInterval = std::chrono::milliseconds(200);
// Acknowledged answers leave the outbox this many at once, or this long after
// the first of them was acknowledged: two disk flushes (the inbox's, the
// outbox's) per batch rather than per answer. Until then a crash sends them
// again (same key), as it would between an acknowledgement and its removal.
constexpr size_t kRemoveBatch = 64;
constexpr auto kRemoveDelay = std::chrono::milliseconds(20);

}  // namespace

Delivery::Delivery(DurableQueue& outbox, DurableQueue& inbox, Connection& connection,
                   int max_inflight, MetricsRegistry& metrics, Logger logger)
    : outbox_(outbox),
      inbox_(inbox),
      connection_(connection),
      max_inflight_(max_inflight),
      logger_(std::move(logger)),
      delivered_(
          metrics.GetCounter("perch_mqtt_delivered_total", "Messages the broker acknowledged", {})),
      undeliverable_(metrics.GetCounter("perch_mqtt_undeliverable_total",
                                        "Records dropped because no broker would take them", {})) {}

Delivery::~Delivery() { Stop(); }

void Delivery::Start() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = false;
  }
  thread_ = std::thread([this] { Loop(); });
}

void Delivery::Stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wakeup_.notify_all();
  if (thread_.joinable()) {
    thread_.join();
  }
}

void Delivery::Loop() {
  std::unique_lock lock(mutex_);
  while (true) {
    const auto now = std::chrono::steady_clock::now();
    if (!acknowledged_.empty() && (stopping_ || acknowledged_.size() >= kRemoveBatch ||
                                   now >= first_acknowledged_ + kRemoveDelay)) {
      RemoveAcknowledged(lock);
    }
    if (stopping_) {
      return;
    }
    if (connection_.connected()) {
      PublishPendingLocked();
    }
    const auto wake_at = acknowledged_.empty()
                             ? now + kPollInterval
                             : std::min(now + kPollInterval, first_acknowledged_ + kRemoveDelay);
    // Woken early too when a removal falls due before wake_at (the first
    // acknowledgement of a batch came in meanwhile).
    wakeup_.wait_until(lock, wake_at, [this, wake_at] {
      return stopping_ || woken_ || acknowledged_.size() >= kRemoveBatch ||
             (!acknowledged_.empty() && first_acknowledged_ + kRemoveDelay < wake_at);
    });
    woken_ = false;
  }
}

void Delivery::RemoveAcknowledged(std::unique_lock<std::mutex>& lock) {
  std::vector<int64_t> acknowledged;
  acknowledged.swap(acknowledged_);
  // Not under the lock: a lane's PublishAnswer need not wait for the disk.
  lock.unlock();
  // The requests of these answers left the inbox unsynced: that must hold
  // before their answers leave, or a power loss would answer them again.
  Status removed = inbox_.Sync();
  if (removed.ok()) {
    removed = outbox_.Remove(acknowledged);
  }
  lock.lock();
  if (!removed.ok()) {
    // Kept, and tried again with the next batch; sent again after a restart
    // (same key) if it never holds.
    logger_.Error("MQTT: acknowledged answers stay in the outbox for now: {}", removed.message());
    acknowledged_.insert(acknowledged_.begin(), acknowledged.begin(), acknowledged.end());
    first_acknowledged_ = std::chrono::steady_clock::now() + kPollInterval;
  }
}

void Delivery::PublishAnswer(const QueuedRecord& answer) {
  if (!connection_.connected()) {
    return;  // the delivery thread sends it once connected
  }
  std::lock_guard lock(mutex_);
  if (answer.sequence == last_sent_ + 1 && static_cast<int>(in_flight_.size()) < max_inflight_) {
    PublishRecordLocked(answer);
  } else {
    PublishPendingLocked();
  }
}

void Delivery::OnPublished(int message_id, const Status& outcome) {
  {
    std::lock_guard lock(mutex_);
    const auto it = in_flight_.find(message_id);
    if (it == in_flight_.end()) {
      return;  // from before a reconnect, or the status
    }
    if (!outcome.ok()) {
      logger_.Error("MQTT: the broker refused record {}: {}; dropping it", it->second,
                    outcome.message());
      undeliverable_.Increment();
    } else {
      delivered_.Increment();
    }
    if (acknowledged_.empty()) {
      first_acknowledged_ = std::chrono::steady_clock::now();
    }
    acknowledged_.push_back(it->second);
    in_flight_.erase(it);
    // The delivery thread is told when its next removal's time is set, and
    // when a batch is full; otherwise it wakes when the batch is due.
    if (acknowledged_.size() != 1 && acknowledged_.size() < kRemoveBatch) {
      return;
    }
  }
  wakeup_.notify_all();
}

void Delivery::Restart() {
  std::lock_guard lock(mutex_);
  in_flight_.clear();
  last_sent_ = 0;
}

void Delivery::Wake() {
  {
    std::lock_guard lock(mutex_);
    woken_ = true;
  }
  wakeup_.notify_all();
}

// Publishes what the outbox holds past the last record sent, oldest first.
void Delivery::PublishPendingLocked() {
  const auto room =
      static_cast<size_t>(std::max(0, max_inflight_ - static_cast<int>(in_flight_.size())));
  if (room == 0) {
    return;
  }
  const auto records = outbox_.Read(last_sent_, room);
  if (!records.ok()) {
    logger_.Error("MQTT: {}", records.status().message());
    return;
  }
  for (const auto& record : *records) {
    // Acknowledged on an earlier connection, waiting to leave the outbox.
    if (std::find(acknowledged_.begin(), acknowledged_.end(), record.sequence) !=
        acknowledged_.end()) {
      last_sent_ = record.sequence;
      continue;
    }
    if (!PublishRecordLocked(record)) {
      return;  // again once connected
    }
  }
}

// False when there is no connection to publish on.
bool Delivery::PublishRecordLocked(const QueuedRecord& record) {
  const std::string correlation = CorrelationOf(record);
  const auto published = connection_.Publish(OutgoingMessage{.topic = record.destination,
                                                             .payload = record.payload,
                                                             .retain = false,
                                                             .content_type = "application/json",
                                                             .idempotency_key = record.key,
                                                             .correlation = correlation});
  if (published.ok()) {
    in_flight_[*published] = record.sequence;
    last_sent_ = record.sequence;
    return true;
  }
  if (published.status().code() == StatusCode::kUnavailable) {
    return false;
  }
  // The broker will never take this one (bad topic, too large): drop it
  // rather than block everything behind it.
  logger_.Error("MQTT: record {} for {} cannot be published ({}); dropping it", record.sequence,
                record.destination, published.status().message());
  undeliverable_.Increment();
  if (acknowledged_.empty()) {
    first_acknowledged_ = std::chrono::steady_clock::now();
  }
  acknowledged_.push_back(record.sequence);
  last_sent_ = record.sequence;
  wakeup_.notify_all();  // to remove it from the outbox
  return true;
}

}  // namespace perch::mqtt
