// The hub's device-metrics API (docs/fleet.md "Device metrics"), JSON
// under /api/v1/metrics/, admin token only:
//   GET /api/v1/metrics/devices/{name}     one device: its models and vitals
//   GET /api/v1/metrics/models/{name}      one model on every device
//   GET /api/v1/metrics/locations/{name}   the devices of one location
// Query parameters: from, to (unix seconds; default the last hour),
// limit (rows per series, 1..1000, default 500), and for devices and
// locations `model`, for models `version` and `location`. Ranges longer
// than seven days, a `to` before `from` and limits out of bounds are 400
// naming the parameter. A page that filled a series says `next_from`.
//
// Ownership: `store` must outlive the server's last request.
// Threading: handlers run on the server's handler threads, concurrently.
#pragma once

#include <string>

#include "core/log.h"
#include "fleet/metrics_store.h"
#include "http/server.h"

namespace perch {

// Call before server.Start().
void MountMetricsRoutes(http::Server& server, MetricsStore& store, std::string admin_token,
                        Logger logger);

// The JSON of one page: {"models":[…], "vitals":[…], "next_from": t|null}.
std::string ToJson(const MetricsPage& page);

}  // namespace perch
