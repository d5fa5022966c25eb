// The hub's fleet API, JSON under /api/v1/ (docs/fleet.md), mounted on an
// http::Server that the caller owns: the hub serves it on the same port as
// its OCI registry. A thin adapter over FleetStore: it checks who is
// calling, parses the body into fleet types and encodes the answer. Errors
// carry the JSON error body of http/errors.h ({"error", "code"}).
//
// Who may do what: the admin token everything; a location's enrolment
// token only POST /api/v1/enrol; a device token only its own device's
// desired state, heartbeat and record (another device's: 403). Tokens come
// as `Authorization: Bearer <token>` (the scheme in any case) or as the
// password of Basic (http/credentials.h), as the registry takes them.
//
// Ownership: `store` must outlive the server's last request.
// Threading: handlers run on the server's handler threads, concurrently.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "core/log.h"
#include "fleet/fleet_store.h"
#include "http/server.h"

namespace perch {

class MetricsStore;

struct FleetHttpOptions {
  std::string admin_token;          // required
  size_t max_body_bytes = 1 << 20;  // fleet documents are small; past it 413
  // A device heard from within this long is online (GET /api/v1/overview).
  int64_t online_seconds = 30;
  // Where heartbeats' device metrics go; null: they are not kept.
  MetricsStore* metrics = nullptr;
  // Called after each request with the answer and the handler's time in
  // seconds (the hub's /metrics); may be empty.
  std::function<void(const http::Request&, const http::Response&, double)> observe{};
};

// Call before server.Start().
void MountFleetRoutes(http::Server& server, FleetStore& store, const FleetHttpOptions& options,
                      Logger logger);

}  // namespace perch
