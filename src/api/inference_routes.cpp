// Model metadata, readiness and infer, with and without a version.
#include <fmt/format.h>

#include <charconv>
#include <nlohmann/json.hpp>

#include "api/http_context.h"
#include "tensor/json_codec.h"

namespace perch::http {
namespace {

constexpr std::string_view kHeaderLength = "Inference-Header-Content-Length";
// Model names never hold '/', versions are digits; both are checked again
// (and properly) by ModelManager before anything else happens.
constexpr const char* kModelPath = R"(/v2/models/([^/]+)(?:/versions/([^/]+))?)";

std::string VersionOf(const httplib::Request& request) {
  return request.matches.size() > 2 ? request.matches[2].str() : std::string();
}

nlohmann::json SpecsToJson(const std::vector<TensorSpec>& specs) {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& spec : specs) {
    list.push_back(
        {{"name", spec.name}, {"datatype", ToString(spec.datatype)}, {"shape", spec.shape}});
  }
  return list;
}

void HandleMetadata(const Context& context, const httplib::Request& request,
                    httplib::Response& response) {
  const std::string name = request.matches[1];
  auto model = context.models.Acquire(name, VersionOf(request));
  if (!model.ok()) {
    SendError(response, model.status());
    return;
  }
  nlohmann::json versions = nlohmann::json::array();
  for (const int64_t version : context.models.ReadyVersions(name)) {
    versions.push_back(std::to_string(version));
  }
  const auto& signature = (*model)->signature();
  SendJson(response, 200,
           nlohmann::json{
               {"name", name},
               {"versions", versions},
               {"platform", "onnxruntime_onnx"},
               {"inputs", SpecsToJson(signature.inputs)},
               {"outputs", SpecsToJson(signature.outputs)},
           }
               .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

void HandleReady(const Context& context, const httplib::Request& request,
                 httplib::Response& response) {
  const std::string name = request.matches[1];
  const auto model = context.models.Acquire(name, VersionOf(request));
  if (model.ok()) {
    SendJson(response, 200, nlohmann::json{{"name", name}, {"ready", true}}.dump());
    return;
  }
  if (model.status().code() != StatusCode::kUnavailable) {
    SendError(response, model.status());
    return;
  }
  SendJson(
      response, 503,
      nlohmann::json{{"name", name}, {"ready", false}, {"error", model.status().message()}}.dump(
          -1, ' ', false, nlohmann::json::error_handler_t::replace));
}

// The JSON part's length for the binary tensor extension; the whole body without it.
Result<size_t> JsonLength(const httplib::Request& request, std::string_view body) {
  if (!request.has_header(std::string(kHeaderLength))) {
    return body.size();
  }
  const std::string value = request.get_header_value(std::string(kHeaderLength));
  size_t length = 0;
  const auto [ptr, error] = std::from_chars(value.data(), value.data() + value.size(), length);
  if (error != std::errc() || ptr != value.data() + value.size() || value.empty()) {
    return InvalidArgument(
        fmt::format("{} must be a non-negative integer, not \"{}\"", kHeaderLength, value));
  }
  if (length > body.size()) {
    return InvalidArgument(
        fmt::format("{} is {} but the body has only {} bytes", kHeaderLength, length, body.size()));
  }
  return length;
}

Result<JsonInferRequest> Decode(const Context& context, const httplib::Request& request,
                                std::string_view body) {
  PERCH_ASSIGN_OR_RETURN(const size_t json_length, JsonLength(request, body));
  return DecodeJsonInferRequest(body.substr(0, json_length), body.substr(json_length),
                                context.options.max_json_depth);
}

void HandleInfer(const Context& context, const httplib::Request& request, const std::string& body,
                 httplib::Response& response) {
  const std::string model_name = request.matches[1];
  const std::string model_version = VersionOf(request);
  auto decoded = Decode(context, request, body);
  if (!decoded.ok()) {
    context.inference.RecordUndecodable(model_name, model_version);
    SendError(response, decoded.status());
    return;
  }
  decoded->request.model_name = model_name;
  decoded->request.model_version = model_version;
  const auto result = context.inference.Infer(std::move(decoded->request));
  if (!result.ok()) {
    SendError(response, result.status());
    return;
  }
  auto encoded = EncodeJsonInferResponse(*result, *decoded);
  if (!encoded.ok()) {
    SendError(response, encoded.status());
    return;
  }
  response.status = 200;
  if (encoded->has_binary) {
    response.set_header(std::string(kHeaderLength), std::to_string(encoded->json_size));
    response.set_content(encoded->body, "application/octet-stream");
  } else {
    response.set_content(encoded->body, "application/json");
  }
}

}  // namespace

void RegisterInferenceRoutes(httplib::Server& server, const Context& context) {
  const std::string model_path = kModelPath;
  server.Get(model_path, [&context](const httplib::Request& request, httplib::Response& response) {
    HandleMetadata(context, request, response);
  });
  server.Get(model_path + "/ready",
             [&context](const httplib::Request& request, httplib::Response& response) {
               HandleReady(context, request, response);
             });
  PostWithBody(
      server, model_path + "/infer", context,
      [&context](const httplib::Request& request, const std::string& body,
                 httplib::Response& response) { HandleInfer(context, request, body, response); });
}

}  // namespace perch::http
