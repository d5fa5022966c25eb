// Model metadata, readiness and infer, with and without a version.
#include <fmt/format.h>

#include <charconv>
#include <nlohmann/json.hpp>

#include "api/forwarding.h"
#include "api/http_context.h"
#include "api/rest_forwarder.h"
#include "http/errors.h"
#include "tensor/json_codec.h"

namespace perch::api {
namespace {

constexpr std::string_view kHeaderLength = "Inference-Header-Content-Length";
// Model names never hold '/', versions are digits; both are checked again
// (and properly) by ModelManager before anything else happens.
constexpr const char* kModelPath = R"(/v2/models/([^/]+)(?:/versions/([^/]+))?)";

std::string VersionOf(const http::Request& request) { return std::string(request.match(2)); }

nlohmann::json SpecsToJson(const std::vector<TensorSpec>& specs) {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& spec : specs) {
    list.push_back(
        {{"name", spec.name}, {"datatype", ToString(spec.datatype)}, {"shape", spec.shape}});
  }
  return list;
}

void HandleMetadata(const Context& context, const http::Request& request,
                    http::Response& response) {
  const std::string name(request.match(1));
  auto model = context.models.Acquire(name, VersionOf(request));
  if (!model.ok()) {
    http::SetError(response, model.status());
    return;
  }
  nlohmann::json versions = nlohmann::json::array();
  for (const int64_t version : context.models.ReadyVersions(name)) {
    versions.push_back(std::to_string(version));
  }
  const auto& signature = (*model)->signature();
  http::SetJson(response, 200,
                nlohmann::json{
                    {"name", name},
                    {"versions", versions},
                    {"platform", "onnxruntime_onnx"},
                    {"inputs", SpecsToJson(signature.inputs)},
                    {"outputs", SpecsToJson(signature.outputs)},
                }
                    .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

void HandleReady(const Context& context, const http::Request& request, http::Response& response) {
  const std::string name(request.match(1));
  const auto model = context.models.Acquire(name, VersionOf(request));
  if (model.ok()) {
    http::SetJson(response, 200, nlohmann::json{{"name", name}, {"ready", true}}.dump());
    return;
  }
  if (model.status().code() != StatusCode::kUnavailable) {
    http::SetError(response, model.status());
    return;
  }
  http::SetJson(
      response, 503,
      nlohmann::json{{"name", name}, {"ready", false}, {"error", model.status().message()}}.dump(
          -1, ' ', false, nlohmann::json::error_handler_t::replace));
}

// The JSON part's length for the binary tensor extension; the whole body without it.
Result<size_t> JsonLength(const http::Request& request, std::string_view body) {
  const auto header = request.headers.Get(kHeaderLength);
  if (!header) {
    return body.size();
  }
  const std::string_view value = *header;
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

Result<JsonInferRequest> Decode(const Context& context, const http::Request& request,
                                std::string_view body) {
  PERCH_ASSIGN_OR_RETURN(const size_t json_length, JsonLength(request, body));
  return DecodeJsonInferRequest(body.substr(0, json_length), body.substr(json_length),
                                context.options.max_json_depth);
}

void HandleInfer(const Context& context, const http::Request& request, http::Response& response) {
  const std::string& body = request.body;
  const std::string model_name(request.match(1));
  const std::string model_version = VersionOf(request);
  auto decoded = Decode(context, request, body);
  if (!decoded.ok()) {
    context.inference.RecordUndecodable(model_name, model_version);
    http::SetError(response, decoded.status());
    return;
  }
  decoded->request.model_name = model_name;
  decoded->request.model_version = model_version;
  const auto result = context.inference.Infer(std::move(decoded->request));
  if (!result.ok()) {
    http::SetError(response, result.status());
    return;
  }
  auto encoded = EncodeJsonInferResponse(*result, *decoded);
  if (!encoded.ok()) {
    http::SetError(response, encoded.status());
    return;
  }
  response.status = 200;
  if (encoded->has_binary) {
    response.headers.Set(kHeaderLength, std::to_string(encoded->json_size));
    response.SetBody(std::move(encoded->body), "application/octet-stream");
  } else {
    response.SetBody(std::move(encoded->body), "application/json");
  }
}

// A request body up to this size decodes in microseconds (simdjson, or the
// binary extension's copy): small enough to handle on the I/O thread.
constexpr size_t kInlineBodyBytes = 16 << 10;

// Whether an infer request is answered on the I/O thread (http::RouteOptions::
// run_inline): a small body for a quick model served here that would start
// at once. A timeout in the body sends it to a worker when the scheduler
// needs one; then the I/O thread waits one quick run at most.
bool InferInline(const Context& context, const http::Request& request) {
  if (request.body.size() > kInlineBodyBytes) {
    return false;
  }
  const std::string_view model = request.match(1);
  const bool forwarded = request.headers.Has(kForwardedByHeader);
  return RouteRequest(context.models, context.peers, forwarded, model, request.match(2)) ==
             Destination::kHere &&
         context.inference.RunsAtOnce(model, request.match(2));
}

using LocalHandler = void (*)(const Context&, const http::Request&, http::Response&);

// Answers here with `local`, or has a peer answer (forwarding.h); either way
// the answer names the device that gave it.
http::Handler Answer(const Context& context, LocalHandler local) {
  return [&context, local](http::Request& request, http::Response& response) {
    const std::string_view model = request.match(1);
    const bool forwarded = request.headers.Has(kForwardedByHeader);
    switch (RouteRequest(context.models, context.peers, forwarded, model, request.match(2))) {
      case Destination::kPeer:
        context.forwarder->Forward(request, model, response);
        break;
      case Destination::kNowhere:
        http::SetError(response, NowhereServed(model, context.options.forwarding.device));
        break;
      case Destination::kHere:
        local(context, request, response);
        break;
    }
    const std::string& device = context.options.forwarding.device;
    if (!device.empty() && !response.headers.Has(kDeviceHeader)) {
      response.headers.Set(kDeviceHeader, device);
    }
  };
}

}  // namespace

void RegisterInferenceRoutes(http::Server& server, const Context& context) {
  const std::string model_path = kModelPath;
  server.Route("GET", model_path, WithApiToken(context, Answer(context, HandleMetadata)));
  server.Route("GET", model_path + "/ready", WithApiToken(context, Answer(context, HandleReady)));
  server.Route("POST", model_path + "/infer", WithApiToken(context, Answer(context, HandleInfer)),
               {.run_inline = [&context](const http::Request& request) {
                 return InferInline(context, request);
               }});
}

}  // namespace perch::api
