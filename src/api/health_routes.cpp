// Health, server metadata and metrics: open to every client, whatever tokens are set.
#include <nlohmann/json.hpp>

#include "api/http_context.h"
#include "http/errors.h"

namespace perch::api {

void RegisterHealthRoutes(http::Server& server, const Context& context) {
  server.Route("GET", "/v2/health/live", [](http::Request&, http::Response& response) {
    http::SetJson(response, 200, R"({"live":true})");
  });
  server.Route("GET", "/v2/health/ready", [&context](http::Request&, http::Response& response) {
    const bool ready = context.models.Ready();
    http::SetJson(response, ready ? 200 : 503, nlohmann::json{{"ready", ready}}.dump());
  });
  server.Route("GET", "/v2", [&context](http::Request&, http::Response& response) {
    http::SetJson(response, 200,
                  nlohmann::json{
                      {"name", "perch"},
                      {"version", context.options.server_version},
                      {"extensions", {"binary_tensor_data", "model_repository", "metrics"}},
                  }
                      .dump());
  });
  server.Route("GET", "/metrics", [&context](http::Request&, http::Response& response) {
    response.SetBody(context.metrics.RenderPrometheus(), "text/plain; version=0.0.4");
  });
}

}  // namespace perch::api
