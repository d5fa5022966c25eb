// MqttBridge: inference over MQTT, and the agent's link for everything it
// must deliver.
//
// Topics (under `prefix`, default "perch"):
//   <prefix>/<location>/<device>/infer/<model>   requests for this device
//   <prefix>/<location>/infer/<model>            requests for any device of the
//                                                location (a shared subscription,
//                                                so the broker spreads them)
//   <prefix>/<location>/<device>/status          retained status, with a last will
//   <prefix>/<location>/<device>/results/<model> answers nobody asked a topic for
//   <prefix>/<location>/<device>/errors          errors nobody asked a topic for
//   <prefix>/<location>/<device>/leaving         the location link's own marker
//   model.json "mqtt": {"input_topic", "output_topic"}: an event stream
// A payload is the JSON body of a REST infer request. Answers go to the MQTT 5
// Response Topic with the Correlation Data, or (MQTT 3.1.1 clients) to
// "reply_to" in the body, echoing "id". An error answer is
// {"error": <message>, "code": <StatusCode name>, "model_name", "topic", "id"}.
//
// Nothing accepted is lost: a message is written to the inbox queue before
// the broker is acknowledged, its answer to the outbox queue before it leaves
// the inbox, and an answer leaves the outbox only when the broker
// acknowledged it (QoS 1). Answers carry an idempotency key (a user property
// and "idempotency_key" in the body), the same if a crash makes perch answer
// a message twice; a message the broker sends again after a lost
// acknowledgement is recognised and not answered twice (docs/mqtt.md says
// exactly when). The outbox is the only source of resends: every connection
// gets a fresh MQTT client, so the library's session replays nothing.
//
// Threading: a network thread (the broker link, taking requests in, event
// stream bindings, the status), one for the location's shared subscription
// (a link of its own, so that its membership ends with the agent), a delivery thread
// (acknowledgements, resends) and `lanes` processing threads, which publish their own answers;
// messages of one topic always go through one lane, in order. Start and Stop are called from one
// controlling thread. The parts are internal headers of mqtt/, each stating its own threading
// model.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "core/log.h"
#include "core/metrics.h"
#include "core/status.h"
#include "models/inference_service.h"
#include "models/model_manager.h"
#include "outbox/durable_queue.h"

namespace perch {

struct MqttOptions {
  std::string url;  // mqtt://HOST[:1883] or mqtts://HOST[:8883]
  std::string username;
  std::string password;
  std::string ca_file;  // mqtts: the CA to trust (default: the system's)
  std::string location = "default";
  std::string device;  // required
  std::string prefix = "perch";
  int keepalive_seconds = 30;
  int lanes = 2;
  int max_inflight = 64;  // answers published but not yet acknowledged
  std::chrono::milliseconds reconnect_min{250};
  std::chrono::milliseconds reconnect_max{15000};
  std::string server_version = "0.0.0";
};

class MqttBridge {
 public:
  // InvalidArgument for a malformed URL, location, device or prefix. Opens
  // nothing, so a configuration check can call it.
  static Status CheckOptions(const MqttOptions& options);
  // The errors of CheckOptions.
  static Result<std::unique_ptr<MqttBridge>> Create(const MqttOptions& options,
                                                    const InferenceService& inference,
                                                    const ModelManager& models, DurableQueue& inbox,
                                                    DurableQueue& outbox, MetricsRegistry& metrics,
                                                    Logger logger);
  ~MqttBridge();
  MqttBridge(const MqttBridge&) = delete;
  MqttBridge& operator=(const MqttBridge&) = delete;

  // Starts connecting (in the background, retrying with backoff and jitter)
  // and processing what the inbox still holds from before a restart.
  Status Start();
  // Stops processing and disconnects; what is queued stays queued.
  void Stop();

 private:
  class Impl;
  explicit MqttBridge(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace perch
