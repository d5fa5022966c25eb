// Internal to api/: what the route files share. Not a public header.
#pragma once

#include <functional>
#include <string>

#include "api/http_server.h"
#include "http/server.h"

namespace perch::api {

class RestForwarder;

struct Context {
  const HttpServerOptions& options;
  const InferenceService& inference;
  ModelManager& models;
  const MetricsRegistry& metrics;
  const Logger& logger;
  PeerDirectory* peers;      // null: no network local
  const BlobStore* blobs;    // null: no blobs to share
  RestForwarder* forwarder;  // set when `peers` is
};

// `handler`, answering 401 first unless the request carries `token`; an
// empty token leaves the route open.
http::Handler WithToken(const std::string& token, http::Handler handler);
// For the OIP routes: open when no API token is set, otherwise the API token
// or the location's peer token (so that requests a peer forwards pass).
http::Handler WithApiToken(const Context& context, http::Handler handler);
// For the peer-only routes: the location's peer token and nothing else; 401
// when the agent has none.
http::Handler WithPeerToken(const Context& context, http::Handler handler);

void RegisterHealthRoutes(http::Server& server, const Context& context);
void RegisterInferenceRoutes(http::Server& server, const Context& context);
void RegisterRepositoryRoutes(http::Server& server, const Context& context);
void RegisterPeerRoutes(http::Server& server, const Context& context);

}  // namespace perch::api
