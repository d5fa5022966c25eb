// The repository extension: index, load and unload.
#include <nlohmann/json.hpp>

#include "api/http_context.h"

namespace perch::http {

void RegisterRepositoryRoutes(httplib::Server& server, const Context& context) {
  PostWithBody(server, "/v2/repository/index", context,
               [&context](const httplib::Request&, const std::string& request_body,
                          httplib::Response& response) {
                 bool ready_only = false;
                 if (!request_body.empty()) {
                   const auto body = nlohmann::json::parse(request_body, nullptr, false);
                   if (body.is_discarded() || !body.is_object() ||
                       (body.contains("ready") && !body["ready"].is_boolean())) {
                     SendError(response, InvalidArgument("the index request body must be a JSON "
                                                         "object such as {\"ready\": true}"));
                     return;
                   }
                   ready_only = body.value("ready", false);
                 }
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
                   index.push_back(std::move(row));
                 }
                 SendJson(response, 200,
                          index.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
               });
  PostWithBody(
      server, R"(/v2/repository/models/([^/]+)/(load|unload))", context,
      [&context](const httplib::Request& request, const std::string&, httplib::Response& response) {
        const std::string name = request.matches[1];
        const Status status = request.matches[2] == "load" ? context.models.LoadModel(name)
                                                           : context.models.UnloadModel(name);
        if (!status.ok()) {
          SendError(response, status);
          return;
        }
        SendJson(response, 200, "{}");
      });
}

}  // namespace perch::http
