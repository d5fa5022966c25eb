// Health, server metadata and metrics.
#include <nlohmann/json.hpp>

#include "api/http_context.h"

namespace perch::http {

void RegisterHealthRoutes(httplib::Server& server, const Context& context) {
  server.Get("/v2/health/live", [](const httplib::Request&, httplib::Response& response) {
    SendJson(response, 200, R"({"live":true})");
  });
  server.Get("/v2/health/ready", [&context](const httplib::Request&, httplib::Response& response) {
    const bool ready = context.models.Ready();
    SendJson(response, ready ? 200 : 503, nlohmann::json{{"ready", ready}}.dump());
  });
  server.Get("/v2", [&context](const httplib::Request&, httplib::Response& response) {
    SendJson(response, 200,
             nlohmann::json{
                 {"name", "perch"},
                 {"version", context.options.server_version},
                 {"extensions", {"binary_tensor_data", "model_repository", "metrics"}},
             }
                 .dump());
  });
  server.Get("/metrics", [&context](const httplib::Request&, httplib::Response& response) {
    response.set_content(context.metrics.RenderPrometheus(), "text/plain; version=0.0.4");
  });
}

}  // namespace perch::http
