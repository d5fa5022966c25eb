// The hub's fleet API, JSON under /api/v1/ (docs/fleet.md), mounted on an
// HTTP server that the caller owns: the hub serves it on the same port as
// its OCI registry. A thin adapter over FleetStore: it checks who is
// calling, parses the body into fleet types and encodes the answer.
//
// Who may do what: the admin token everything; a location's enrolment
// token only POST /api/v1/enrol; a device token only its own device's
// desired state, heartbeat and record (another device's: 403).
//
// Ownership: `store` must outlive the server's last request.
// Threading: handlers run on the server's pool threads, concurrently.
#pragma once

#include <cstddef>
#include <string>

#include "core/log.h"
#include "fleet/fleet_store.h"

namespace httplib {
class Server;
}  // namespace httplib

namespace perch {

struct FleetHttpOptions {
  std::string admin_token;          // required
  size_t max_body_bytes = 1 << 20;  // fleet documents are small
};

void MountFleetRoutes(httplib::Server& server, FleetStore& store, const FleetHttpOptions& options,
                      Logger logger);

}  // namespace perch
