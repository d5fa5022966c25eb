// Internal to mqtt/: the request -> answer step, pure. It decodes an MQTT
// request (payload and the properties that matter) into perch's InferRequest,
// runs it through the InferenceService and encodes the answer or the error,
// and says where the answer goes. No broker, no threads, no queues: the
// bridge's lanes call it and store what it returns.
//
// It also holds the formats of the two queue records it is given and returns
// (the inbox's request, the outbox's answer), so that what one side writes
// the other reads.
//
// Threading: free functions over their arguments; thread-safe as long as the
// InferenceService is (it is).
#pragma once

#include <string>
#include <string_view>

#include "core/status.h"
#include "models/inference_service.h"
#include "mqtt/mqtt_topics.h"
#include "outbox/durable_queue.h"

namespace perch::mqtt {

// A request as it came from the broker.
struct InboundRequest {
  std::string topic;           // where it arrived
  std::string model;           // the model it is for (from the topic or a stream binding)
  std::string payload;         // the JSON body of a REST infer request
  std::string response_topic;  // MQTT 5 Response Topic; empty: none
  std::string correlation;     // MQTT 5 Correlation Data, raw bytes; empty: none
  std::string stream_output;   // a stream binding's output topic; empty: none
};

// What the inbox keeps besides the topic (its destination) and the payload.
std::string EncodeRequestAttributes(const InboundRequest& request);
// The request an inbox record holds. Damaged attributes leave the fields they
// held empty: the request is still answered (as an error, when the model is
// unknown).
InboundRequest DecodeRequestRecord(const QueuedRecord& record);

struct Answer {
  std::string destination;  // the topic to publish on
  std::string body;         // a JSON object: the REST answer, or ErrorBody
  std::string correlation;  // Correlation Data to send back; empty: none
  Status status;            // Ok, or the error `body` reports
};

// Answers `request`. Where it goes: the Response Topic, else the body's
// "reply_to" (MQTT 3.1.1), else the stream binding's output topic (answers
// only), else layout's results topic (answers) or errors topic (errors). A
// reply topic nobody can publish to sends an InvalidArgument error to the
// errors topic. Error codes: InvalidArgument for a payload that is not an
// infer request, and whatever InferenceService::Infer answers.
Answer AnswerRequest(const InboundRequest& request, const InferenceService& inference,
                     const TopicLayout& layout);

// {"error": <message>, "code": <StatusCode name>, "model_name", "topic"[, "id"]}:
// the error body of every perch API, with what correlates it to the request.
std::string ErrorBody(const Status& status, std::string_view model, std::string_view topic,
                      std::string_view id);

// Correlation Data (raw bytes) as the queue records keep it: hex.
std::string CorrelationHex(std::string_view bytes);

// The outbox record of `answer` under idempotency `key`: the key is the
// body's first member, "idempotency_key".
QueuedRecord AnswerRecord(const Answer& answer, std::string_view key);
// The Correlation Data (raw bytes) an outbox record carries; empty: none.
std::string CorrelationOf(const QueuedRecord& answer);

}  // namespace perch::mqtt
