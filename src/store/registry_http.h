// The OCI Distribution v1.1 HTTP API of a Registry, mounted on an HTTP
// server that the caller owns (the hub serves its fleet API on the same
// port). Every answer carries `Docker-Distribution-API-Version:
// registry/2.0`; errors use the spec's `{"errors":[{"code",...}]}` body.
//
// Ownership: `registry` must outlive the server's last request. The routes
// keep their own copy of `options` and `logger`.
// Threading: handlers run on the server's pool threads, concurrently.
#pragma once

#include <string>

#include "core/log.h"
#include "store/access.h"
#include "store/registry.h"

namespace httplib {
class Server;
}  // namespace httplib

namespace perch {

struct RegistryHttpOptions {
  AccessTokens tokens;
  std::string realm = "perch-hub";  // in the WWW-Authenticate challenge
};

// Registers GET /v2/ and every /v2/<name>/... route, plus a catch-all that
// answers unknown /v2/ endpoints with 404 in the spec's error shape.
void MountRegistryRoutes(httplib::Server& server, Registry& registry,
                         const RegistryHttpOptions& options, Logger logger);

}  // namespace perch
