// The OCI Distribution v1.1 HTTP API of a Registry, mounted on an
// http::Server that the caller owns (the hub serves its fleet API on the same
// port). Every answer carries `Docker-Distribution-API-Version:
// registry/2.0`; errors use the spec's `{"errors":[{"code",...}]}` body,
// except the answers the server gives before a route runs (a declared
// length over the route's limit, a stalled client): those carry the server's
// JSON error body (http/errors.h).
//
// Limits: blob uploads (POST, PATCH, PUT) stream to disk and may declare at
// most the registry's max_blob_bytes; manifests are read whole, at most
// max_manifest_bytes.
//
// Ownership: `registry` must outlive the server's last request. The routes
// keep their own copy of `options` and `logger`.
// Threading: handlers run on the server's handler threads, concurrently.
#pragma once

#include <functional>
#include <string>

#include "core/log.h"
#include "http/server.h"
#include "store/access.h"
#include "store/registry.h"

namespace perch {

struct RegistryHttpOptions {
  AccessTokens tokens;
  std::string realm = "perch-hub";  // in the WWW-Authenticate challenge
  // Called after each request's handler with the answer and the handler's
  // time in seconds (a streamed blob's bytes go out after it); the hub's
  // /metrics counts requests with it.
  std::function<void(const http::Request&, const http::Response&, double)> observe{};
};

// Registers GET /v2/ and every /v2/<name>/... route, plus a catch-all that
// answers unknown /v2/ endpoints with 404 in the spec's error shape. Call
// before server.Start().
void MountRegistryRoutes(http::Server& server, Registry& registry,
                         const RegistryHttpOptions& options, Logger logger);

}  // namespace perch
