#include "fleet/hub_metrics.h"

#include <algorithm>
#include <array>
#include <map>

namespace perch {
namespace {

// A bounded label: anything a client could invent becomes "other".
std::string MethodLabel(std::string_view method) {
  for (const char* known : {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"}) {
    if (method == known) {
      return known;
    }
  }
  return "other";
}

}  // namespace

void HubMetrics::Observe(const std::string& api, const http::Request& request,
                         const http::Response& response, double seconds) {
  const MetricLabels labels = {{"api", api},
                               {"method", MethodLabel(request.method)},
                               {"code", std::to_string(response.status)}};
  registry_.GetCounter("perch_hub_requests_total", "Requests the hub answered", labels).Increment();
  registry_
      .GetHistogram("perch_hub_request_duration_seconds", "Time the hub's handlers took",
                    {{"api", api}}, LatencyBucketsSeconds())
      .Observe(seconds);
}

void HubMetrics::Mount(http::Server& server, const FleetStore& store,
                       std::chrono::seconds online_for) {
  server.Route(
      "GET", "/metrics", [this, &store, online_for](http::Request&, http::Response& response) {
        const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count();
        std::map<std::string, int64_t> devices{
            {"online", 0}, {"offline", 0}, {"failing", 0}, {"revoked", 0}};
        for (const Device& device : store.Devices()) {
          ++devices[std::string(DeviceStateAt(device, now, online_for.count()))];
        }
        std::map<std::string, int64_t> rollouts{{"stable", 0}, {"canary", 0}, {"rolled-back", 0}};
        for (const Deployment& deployment : store.Deployments()) {
          const Revision* current = deployment.Current();
          if (current == nullptr || deployment.revisions.back().rolled_back) {
            ++rollouts["rolled-back"];
          } else if (!current->promoted) {
            ++rollouts["canary"];
          } else {
            ++rollouts["stable"];
          }
        }
        for (const auto& [state, count] : devices) {
          registry_.GetGauge("perch_hub_devices", "Enrolled devices by state", {{"state", state}})
              .Set(count);
        }
        for (const auto& [state, count] : rollouts) {
          registry_
              .GetGauge("perch_hub_deployments",
                        "Deployments by the state of their newest revision", {{"state", state}})
              .Set(count);
        }
        response.SetBody(registry_.RenderPrometheus(), "text/plain; version=0.0.4; charset=utf-8");
      });
}

}  // namespace perch
