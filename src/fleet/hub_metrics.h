// The hub's own /metrics in Prometheus text (docs/fleet.md "Hub
// metrics"): API and registry requests (count by api, method and status;
// handler time), devices by state (online, offline, failing, revoked) and
// deployments by rollout state (stable, canary, rolled-back), the latter
// two counted from the fleet store at each scrape.
//
// Ownership: `store` and `registry` must outlive the server's last request.
// Threading: thread-safe; Observe runs on the server's handler threads.
#pragma once

#include <chrono>
#include <string>

#include "core/clock.h"
#include "core/metrics.h"
#include "fleet/fleet_store.h"
#include "http/server.h"

namespace perch {

class HubMetrics {
 public:
  explicit HubMetrics(MetricsRegistry& registry) : registry_(registry) {}

  // Counts one answered request of `api` ("fleet", "registry", "metrics").
  void Observe(const std::string& api, const http::Request& request, const http::Response& response,
               double seconds);

  // GET /metrics. A device is online when heard from within
  // `online_for`, failing when online with errors or a FAILED model.
  void Mount(http::Server& server, const FleetStore& store, std::chrono::seconds online_for);

 private:
  MetricsRegistry& registry_;
};

}  // namespace perch
