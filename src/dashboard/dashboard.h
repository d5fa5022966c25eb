// The hub's dashboard (docs/dashboard.md): a single-page application at /
// on the hub's port, served from files built into the binary, with uPlot
// for its charts. The page holds no secret of the hub's: the operator signs
// in with the admin token, which the page keeps in the tab's
// sessionStorage and sends as `Authorization: Bearer` to the same /api/v1
// every other client uses. As no cookie ever authenticates anything, a
// page on another site cannot make the operator's browser act (CSRF); the
// files are served with a Content-Security-Policy that allows only the
// hub's own scripts and no framing.
//
// Threading: the routes run on the server's handler threads; they only
// read the embedded files.
#pragma once

#include "http/server.h"

namespace perch {

// GET / and GET /dashboard/{file}. Call before server.Start().
void MountDashboard(http::Server& server);

}  // namespace perch
