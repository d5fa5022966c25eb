// Internal to api/: what the route files share. Not a public header.
#pragma once

#include <httplib.h>

#include <functional>
#include <string>

#include "api/http_server.h"
#include "core/http_status.h"

namespace perch::http {

struct Context {
  const HttpServerOptions& options;
  const InferenceService& inference;
  ModelManager& models;
  const MetricsRegistry& metrics;
  const Logger& logger;
};

using perch::HttpStatusFor;  // core/http_status.h

void SendJson(httplib::Response& response, int http_status, const std::string& body);
// `{"error": "<message>"}` with the status that fits `status`.
void SendError(httplib::Response& response, const Status& status);

// Registers a POST route whose body is read here, counting every byte after
// decompression: the HTTP library itself checks only Content-Length, which
// neither chunked nor compressed bodies are bounded by. Past the limit the
// answer is 413 and `handler` is not called.
using BodyHandler =
    std::function<void(const httplib::Request&, const std::string& body, httplib::Response&)>;
void PostWithBody(httplib::Server& server, const std::string& pattern, const Context& context,
                  BodyHandler handler);

void RegisterHealthRoutes(httplib::Server& server, const Context& context);
void RegisterInferenceRoutes(httplib::Server& server, const Context& context);
void RegisterRepositoryRoutes(httplib::Server& server, const Context& context);

}  // namespace perch::http
