#include "mqtt/request_answer.h"

#include <fmt/format.h>
#include <mosquitto.h>

#include <charconv>
#include <nlohmann/json.hpp>

#include "tensor/json_codec.h"

namespace perch::mqtt {
namespace {

using nlohmann::json;

constexpr size_t kMaxJsonDepth = 64;

// The bytes of `hex` (written by CorrelationHex); stops at the first pair that is not hex.
std::string Unhex(std::string_view hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    unsigned value = 0;
    const auto [ptr, error] = std::from_chars(hex.data() + i, hex.data() + i + 2, value, 16);
    if (error != std::errc() || ptr != hex.data() + i + 2) {
      break;
    }
    out += static_cast<char>(value);
  }
  return out;
}

std::string StringMember(const json& object, const char* name) {
  const auto it = object.find(name);
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}

bool IsPublishableTopic(const std::string& topic) {
  return !topic.empty() &&
         mosquitto_pub_topic_check2(topic.c_str(), topic.size()) == MOSQ_ERR_SUCCESS;
}

// The answer body, or the error of running `decoded`.
Result<std::string> Run(JsonInferRequest& decoded, const std::string& model,
                        const InferenceService& inference) {
  decoded.request.model_name = model;
  PERCH_ASSIGN_OR_RETURN(const auto response, inference.Infer(std::move(decoded.request)));
  // Answers are JSON documents: binary output parameters do not apply.
  const JsonInferRequest as_json;
  PERCH_ASSIGN_OR_RETURN(auto encoded, EncodeJsonInferResponse(response, as_json));
  return std::move(encoded.body);
}

}  // namespace

std::string EncodeRequestAttributes(const InboundRequest& request) {
  json attributes = {{"topic", request.topic}, {"model", request.model}};
  if (!request.stream_output.empty()) {
    attributes["stream_output"] = request.stream_output;
  }
  if (!request.response_topic.empty()) {
    attributes["response_topic"] = request.response_topic;
  }
  if (!request.correlation.empty()) {
    attributes["correlation"] = CorrelationHex(request.correlation);
  }
  return attributes.dump(-1, ' ', false, json::error_handler_t::replace);
}

InboundRequest DecodeRequestRecord(const QueuedRecord& record) {
  json attributes = json::parse(record.attributes, nullptr, false);
  if (!attributes.is_object()) {
    attributes = json::object();
  }
  InboundRequest request{.topic = StringMember(attributes, "topic"),
                         .model = StringMember(attributes, "model"),
                         .payload = record.payload,
                         .response_topic = StringMember(attributes, "response_topic"),
                         .correlation = Unhex(StringMember(attributes, "correlation")),
                         .stream_output = StringMember(attributes, "stream_output")};
  if (request.topic.empty()) {
    request.topic = record.destination;
  }
  return request;
}

Answer AnswerRequest(const InboundRequest& request, const InferenceService& inference,
                     const TopicLayout& layout) {
  Answer answer{.destination = request.response_topic,
                .body = {},
                .correlation = request.correlation,
                .status = Status::Ok()};
  auto decoded = DecodeJsonInferRequest(request.payload, "", kMaxJsonDepth);
  std::string id;
  if (decoded.ok()) {
    id = decoded->request.id;
    if (answer.destination.empty()) {
      answer.destination = decoded->reply_to;
    }
  } else {
    // A request that is not a valid infer request may still say where its
    // error should go, and under which id.
    const json body = json::parse(request.payload, nullptr, false);
    if (body.is_object()) {
      id = StringMember(body, "id");
      if (answer.destination.empty()) {
        answer.destination = StringMember(body, "reply_to");
      }
    }
  }

  const auto fail = [&](Status status, std::string destination) {
    answer.body = ErrorBody(status, request.model, request.topic, id);
    answer.status = std::move(status);
    answer.destination = destination.empty() ? layout.Errors() : std::move(destination);
    return answer;
  };
  if (!answer.destination.empty() && !IsPublishableTopic(answer.destination)) {
    return fail(InvalidArgument(fmt::format("\"{}\" is not a topic an answer can be published to",
                                            answer.destination)),
                layout.Errors());
  }
  if (!decoded.ok()) {
    return fail(decoded.status(), answer.destination);
  }
  auto body = Run(*decoded, request.model, inference);
  if (!body.ok()) {
    return fail(body.status(), answer.destination);
  }
  answer.body = std::move(*body);
  if (answer.destination.empty()) {
    answer.destination =
        request.stream_output.empty() ? layout.Results(request.model) : request.stream_output;
  }
  return answer;
}

std::string ErrorBody(const Status& status, std::string_view model, std::string_view topic,
                      std::string_view id) {
  // Ordered: "error" first, as in every other perch error body.
  nlohmann::ordered_json body = {{"error", status.message()},
                                 {"code", std::string(ToString(status.code()))},
                                 {"model_name", model},
                                 {"topic", topic}};
  if (!id.empty()) {
    body["id"] = id;
  }
  return body.dump(-1, ' ', false, json::error_handler_t::replace);
}

// Correlation Data is binary; the queue attributes are JSON.
std::string CorrelationHex(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const char byte : bytes) {
    out += fmt::format("{:02x}", static_cast<unsigned char>(byte));
  }
  return out;
}

QueuedRecord AnswerRecord(const Answer& answer, std::string_view key) {
  std::string payload = answer.body;
  payload.insert(1, fmt::format("\"idempotency_key\":{}{}", JsonQuote(key),
                                answer.body.size() > 2 ? "," : ""));
  json attributes = json::object();
  if (!answer.correlation.empty()) {
    attributes["correlation"] = CorrelationHex(answer.correlation);
  }
  return QueuedRecord{.sequence = 0,
                      .destination = answer.destination,
                      .key = std::string(key),
                      .payload = std::move(payload),
                      .attributes = attributes.dump(),
                      .created_unix_ms = 0};
}

std::string CorrelationOf(const QueuedRecord& answer) {
  const json attributes = json::parse(answer.attributes, nullptr, false);
  return attributes.is_object() ? Unhex(StringMember(attributes, "correlation")) : std::string();
}

}  // namespace perch::mqtt
