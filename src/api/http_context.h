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
  PeerDirectory* peers;      // null: no forwarding
  RestForwarder* forwarder;  // set when `peers` is
};

// `handler`, answering 401 first unless the request carries `token`; an
// empty token leaves the route open.
http::Handler WithToken(const std::string& token, http::Handler handler);

void RegisterHealthRoutes(http::Server& server, const Context& context);
void RegisterInferenceRoutes(http::Server& server, const Context& context);
void RegisterRepositoryRoutes(http::Server& server, const Context& context);

}  // namespace perch::api
