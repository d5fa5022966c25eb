// Internal to mqtt/: processing. Requests are spread over lanes by topic, so
// the requests of one topic are answered in the order they arrived. A lane
// answers a request (AnswerRequest, the pure step), writes the answer to the
// outbox, hands it to Delivery while the outbox flushes it to disk, and only
// then removes the request from the inbox (unsynced: Delivery flushes that
// before the answer leaves the outbox): a crash or power loss in between
// answers it again, under the same key. An answer the outbox cannot store
// (a full disk) is stored again until it holds, and the request stays in the
// inbox meanwhile: an acknowledged request is never dropped for a failing
// disk.
//
// Threading: one thread per lane, started by Start. Dispatch is thread-safe
// (the network thread calls it); Start, ResumeInbox and Stop are called from
// one controlling thread. Each lane's queue is guarded by its own mutex.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/log.h"
#include "core/status.h"
#include "models/inference_service.h"
#include "mqtt/delivery.h"
#include "mqtt/mqtt_topics.h"
#include "outbox/durable_queue.h"

namespace perch::mqtt {

class RequestLanes {
 public:
  // Every reference must outlive the RequestLanes. Answers' keys are
  // "<client_id>/<the request's key>".
  RequestLanes(int lanes, const InferenceService& inference, TopicLayout layout,
               std::string client_id, DurableQueue& inbox, DurableQueue& outbox, Delivery& delivery,
               Logger logger);
  ~RequestLanes();
  RequestLanes(const RequestLanes&) = delete;
  RequestLanes& operator=(const RequestLanes&) = delete;

  void Start();
  // Dispatches what the inbox still holds from before a restart; call it
  // after Start and before new requests arrive, so that those go after.
  Status ResumeInbox();
  // Lets each lane finish the request it is on; the rest stays in the inbox
  // for the next start.
  void Stop();

  // Queues `record` (in the inbox already) on its topic's lane.
  void Dispatch(QueuedRecord record);

 private:
  struct Lane {
    std::mutex mutex;
    std::condition_variable wakeup;
    std::deque<QueuedRecord> records;  // guarded by mutex
    bool stopping = false;             // guarded by mutex
    std::thread thread;                // the controlling thread's
  };

  void Loop(Lane& lane);
  void Process(Lane& lane, const QueuedRecord& record);
  // Waits `wait`; false (at once) when the lane is stopping.
  static bool PauseUnlessStopping(Lane& lane, std::chrono::milliseconds wait);

  const InferenceService& inference_;
  const TopicLayout layout_;
  const std::string client_id_;
  DurableQueue& inbox_;
  DurableQueue& outbox_;
  Delivery& delivery_;
  const Logger logger_;
  std::vector<Lane> lanes_;  // sized once, by the constructor
};

}  // namespace perch::mqtt
