#include "mqtt/request_lanes.h"

#include <fmt/format.h>

#include <algorithm>
#include <exception>
#include <functional>

#include "mqtt/request_answer.h"

namespace perch::mqtt {
namespace {

// Retries of an answer the outbox could not store: soon at first, then every
// few seconds (a full disk clears when someone makes room).
constexpr std::chrono::milliseconds kFirstAppendRetry{100};
constexpr std::chrono::milliseconds kLastAppendRetry{5000};

}  // namespace

RequestLanes::RequestLanes(int lanes, const InferenceService& inference, TopicLayout layout,
                           std::string client_id, DurableQueue& inbox, DurableQueue& outbox,
                           Delivery& delivery, Logger logger)
    : inference_(inference),
      layout_(std::move(layout)),
      client_id_(std::move(client_id)),
      inbox_(inbox),
      outbox_(outbox),
      delivery_(delivery),
      logger_(std::move(logger)),
      lanes_(static_cast<size_t>(std::max(1, lanes))) {}

RequestLanes::~RequestLanes() { Stop(); }

void RequestLanes::Start() {
  for (Lane& lane : lanes_) {
    {
      std::lock_guard lock(lane.mutex);
      lane.stopping = false;
    }
    lane.thread = std::thread([this, &lane] { Loop(lane); });
  }
}

Status RequestLanes::ResumeInbox() {
  int64_t after = 0;
  while (true) {
    PERCH_ASSIGN_OR_RETURN(auto records, inbox_.Read(after, 1000));
    if (records.empty()) {
      return Status::Ok();
    }
    after = records.back().sequence;
    for (auto& record : records) {
      Dispatch(std::move(record));
    }
  }
}

void RequestLanes::Stop() {
  for (Lane& lane : lanes_) {
    {
      std::lock_guard lock(lane.mutex);
      lane.stopping = true;
    }
    lane.wakeup.notify_all();
  }
  for (Lane& lane : lanes_) {
    if (lane.thread.joinable()) {
      lane.thread.join();
    }
  }
}

void RequestLanes::Dispatch(QueuedRecord record) {
  Lane& lane = lanes_[std::hash<std::string>{}(record.destination) % lanes_.size()];
  {
    std::lock_guard lock(lane.mutex);
    lane.records.push_back(std::move(record));
  }
  lane.wakeup.notify_one();
}

void RequestLanes::Loop(Lane& lane) {
  while (true) {
    QueuedRecord record;
    {
      std::unique_lock lock(lane.mutex);
      lane.wakeup.wait(lock, [&] { return lane.stopping || !lane.records.empty(); });
      if (lane.stopping) {
        return;  // the rest stays in the inbox for the next start
      }
      record = std::move(lane.records.front());
      lane.records.pop_front();
    }
    try {
      Process(lane, record);
    } catch (const std::exception& error) {
      // A record that cannot be handled (a damaged database) must not stop
      // the lane: it is dropped, loudly.
      logger_.Error("MQTT: message {} on {} could not be processed ({}); dropping it",
                    record.sequence, record.destination, error.what());
      (void)inbox_.Remove({record.sequence});
    }
  }
}

void RequestLanes::Process(Lane& lane, const QueuedRecord& record) {
  const InboundRequest request = DecodeRequestRecord(record);
  const Answer answer = AnswerRequest(request, inference_, layout_);
  // The answer's key comes from the request's: answering it again after a
  // crash repeats the key, so receivers can drop the repeat.
  QueuedRecord queued = AnswerRecord(answer, fmt::format("{}/{}", client_id_, record.key));
  // Without a disk flush of its own: the answer on disk says the request was
  // answered (its key is the request's), and Delivery flushes this removal
  // before the answer leaves the outbox. A power loss before then answers
  // the request again, under the same key.
  const auto leave_inbox = [&] {
    if (const Status removed = inbox_.RemoveUnsynced({record.sequence}); !removed.ok()) {
      logger_.Error("MQTT: {}", removed.message());
    }
  };
  // Published before its disk flush, which then overlaps the answer's way
  // through the broker instead of delaying it; the request leaves the inbox
  // only once the flush holds, so a power loss before then answers it again,
  // under the same key. Sent from here rather than by waking the delivery
  // thread: one thread hand-off less per answer.
  auto appended =
      outbox_.AppendUnsynced(queued.destination, queued.key, queued.payload, queued.attributes);
  if (appended.ok()) {
    queued.sequence = *appended;
    delivery_.PublishAnswer(queued);
    Status flushed = outbox_.Sync();
    if (flushed.ok()) {
      leave_inbox();
      return;
    }
    // The answer may be undone by a power loss: stored again below, and
    // sent again (a repeat, under the same key).
    appended = std::move(flushed);
  }
  // The request was acknowledged: unless the outbox's own policy refuses the
  // answer (full, reject-new), a failed write (a full disk, an I/O error) is
  // tried again until it holds, and the request stays in the inbox until
  // then. The lane waits meanwhile; its later requests keep their order.
  auto wait = kFirstAppendRetry;
  if (!appended.ok() && !outbox_.RejectsNew()) {
    logger_.Error(
        "MQTT: cannot store the answer to a message on {} ({}); the request stays in the inbox "
        "and the answer is stored again every few seconds until it holds",
        request.topic, appended.status().message());
    while (!appended.ok() && !outbox_.RejectsNew()) {
      if (!PauseUnlessStopping(lane, wait)) {
        return;  // answered again at the next start, under the same key
      }
      wait = std::min(wait * 2, kLastAppendRetry);
      appended = outbox_.Append(queued.destination, queued.key, queued.payload, queued.attributes);
    }
    if (appended.ok()) {
      logger_.Info("MQTT: the outbox stores answers again");
    }
  }
  if (!appended.ok()) {
    logger_.Error("MQTT: the answer to a message on {} was dropped: {}", request.topic,
                  appended.status().message());
  } else {
    queued.sequence = *appended;
    delivery_.PublishAnswer(queued);
  }
  leave_inbox();
}

bool RequestLanes::PauseUnlessStopping(Lane& lane, std::chrono::milliseconds wait) {
  std::unique_lock lock(lane.mutex);
  return !lane.wakeup.wait_for(lock, wait, [&lane] { return lane.stopping; });
}

}  // namespace perch::mqtt
