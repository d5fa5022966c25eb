#include "api/http_server.h"

#include <fmt/format.h>

#include "api/http_context.h"
#include "api/rest_forwarder.h"
#include "http/credentials.h"
#include "http/errors.h"

namespace perch {

namespace api {

http::Handler WithToken(const std::string& token, http::Handler handler) {
  if (token.empty()) {
    return handler;
  }
  return [&token, handler = std::move(handler)](http::Request& request, http::Response& response) {
    if (const Status allowed = http::RequireToken(request, token); !allowed.ok()) {
      http::SetError(response, allowed);
      response.headers.Set("WWW-Authenticate", http::BearerChallenge("perch"));
      return;
    }
    handler(request, response);
  };
}

}  // namespace api

class HttpServer::Impl {
 public:
  Impl(const HttpServerOptions& options, std::unique_ptr<http::Server> server,
       const InferenceService& inference, ModelManager& models, const MetricsRegistry& metrics,
       Logger logger)
      : options_(options),
        logger_(std::move(logger)),
        server_(std::move(server)),
        forwarder_(options_.peers == nullptr
                       ? nullptr
                       : std::make_unique<api::RestForwarder>(options_.forwarding, *options_.peers,
                                                              options_.max_body_bytes, logger_)),
        context_{options_, inference,      models,         metrics,
                 logger_,  options_.peers, options_.blobs, forwarder_.get()} {
    api::RegisterHealthRoutes(*server_, context_);
    api::RegisterInferenceRoutes(*server_, context_);
    api::RegisterRepositoryRoutes(*server_, context_);
    api::RegisterPeerRoutes(*server_, context_);
  }

  Status Start() {
    PERCH_RETURN_IF_ERROR(server_->Start());
    logger_.Info("REST API on {}://{}:{}", server_->scheme(), options_.host, server_->port());
    return Status::Ok();
  }

  void Stop() { server_->Stop(); }
  int port() const { return server_->port(); }
  std::string_view scheme() const { return server_->scheme(); }

 private:
  const HttpServerOptions options_;
  const Logger logger_;
  const std::unique_ptr<http::Server> server_;
  const std::unique_ptr<api::RestForwarder> forwarder_;
  const api::Context context_;
};

Result<std::unique_ptr<HttpServer>> HttpServer::Create(const HttpServerOptions& options,
                                                       const InferenceService& inference,
                                                       ModelManager& models,
                                                       const MetricsRegistry& metrics,
                                                       Logger logger) {
  if (options.threads < 1 || options.max_body_bytes == 0 || options.max_json_depth < 4) {
    return InvalidArgument(
        "HTTP server needs at least 1 thread, a body limit above 0 and a JSON depth of 4 or more");
  }
  http::ServerOptions server_options;
  server_options.host = options.host;
  server_options.port = options.port;
  server_options.handler_threads = options.threads;
  server_options.max_body_bytes = options.max_body_bytes;
  server_options.tls = options.tls;
  server_options.server_header = fmt::format("perch/{}", options.server_version);
  PERCH_ASSIGN_OR_RETURN(auto server, http::Server::Create(std::move(server_options), logger));
  return std::unique_ptr<HttpServer>(new HttpServer(std::make_unique<Impl>(
      options, std::move(server), inference, models, metrics, std::move(logger))));
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HttpServer::~HttpServer() { Stop(); }
Status HttpServer::Start() { return impl_->Start(); }
void HttpServer::Stop() { impl_->Stop(); }
int HttpServer::port() const { return impl_->port(); }
std::string_view HttpServer::scheme() const { return impl_->scheme(); }

}  // namespace perch
