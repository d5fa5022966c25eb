// The MQTT bridge's inbox and outbox records (src/mqtt/request_answer.h):
// they are read back from disk after a crash, so a damaged record must be
// refused or read as empty fields, never crash the agent.
// Input: the attributes of an inbox record, a newline, then an outbox answer record.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_input.h"
#include "mqtt/request_answer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input = perch::fuzz::AsText(data, size);
  perch::QueuedRecord request;
  request.destination = "perch/site/device/infer/model";
  request.payload = "{}";
  request.attributes = std::string(perch::fuzz::TakeField(input));
  (void)perch::mqtt::DecodeRequestRecord(request);
  perch::QueuedRecord answer;
  answer.destination = "replies";
  answer.payload = std::string(input);
  answer.attributes = std::string(input);
  (void)perch::mqtt::CorrelationOf(answer);
  return 0;
}
