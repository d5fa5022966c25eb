// The repository extension: index, load and unload, behind the management token.
#include <nlohmann/json.hpp>

#include "api/http_context.h"
#include "http/errors.h"

namespace perch::api {
namespace {

void HandleIndex(const Context& context, const http::Request& request, http::Response& response) {
  bool ready_only = false;
  bool location = false;
  if (!request.body.empty()) {
    const auto body = nlohmann::json::parse(request.body, nullptr, false);
    if (body.is_discarded() || !body.is_object() ||
        (body.contains("ready") && !body["ready"].is_boolean()) ||
        (body.contains("location") && !body["location"].is_boolean())) {
      http::SetError(response, InvalidArgument("the index request body must be a JSON object "
                                               "such as {\"ready\": true, \"location\": true}"));
      return;
    }
    ready_only = body.value("ready", false);
    location = body.value("location", false);
  }
  const std::string& device = context.options.forwarding.device;
  nlohmann::json index = nlohmann::json::array();
  for (const auto& entry : context.models.Index()) {
    if (ready_only && entry.state != ModelState::kReady) {
      continue;
    }
    nlohmann::json row = {{"name", entry.model}, {"state", ToString(entry.state)}};
    if (entry.version) {
      row["version"] = std::to_string(*entry.version);
    }
    if (!entry.reason.empty()) {
      row["reason"] = entry.reason;
    }
    if (!entry.artifact_digest.empty()) {
      row["artifact"] = {{"reference", entry.artifact_reference},
                         {"digest", entry.artifact_digest}};
    }
    if (location && !device.empty()) {
      row["device"] = device;
    }
    index.push_back(std::move(row));
  }
  // The other agents' models, as the peer directory last heard of them:
  // only the ones they serve (READY), without versions.
  if (location && context.peers != nullptr) {
    for (const Peer& peer : context.peers->Peers()) {
      for (const std::string& model : peer.models) {
        index.push_back({{"name", model}, {"state", "READY"}, {"device", peer.device}});
      }
    }
  }
  http::SetJson(response, 200,
                index.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

}  // namespace

void RegisterRepositoryRoutes(http::Server& server, const Context& context) {
  const std::string& token = context.options.management_token;
  server.Route("POST", "/v2/repository/index",
               WithToken(token, [&context](http::Request& request, http::Response& response) {
                 HandleIndex(context, request, response);
               }));
  server.Route("POST", R"(/v2/repository/models/([^/]+)/(load|unload))",
               WithToken(token, [&context](http::Request& request, http::Response& response) {
                 const std::string name(request.match(1));
                 const Status status = request.match(2) == "load"
                                           ? context.models.LoadModel(name)
                                           : context.models.UnloadModel(name);
                 if (!status.ok()) {
                   http::SetError(response, status);
                   return;
                 }
                 http::SetJson(response, 200, "{}");
               }));
}

}  // namespace perch::api
