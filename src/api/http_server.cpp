#include "api/http_server.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <thread>

#include "api/http_context.h"

namespace perch {

namespace http {

void SendJson(httplib::Response& response, int http_status, const std::string& body) {
  response.status = http_status;
  response.set_content(body, "application/json");
}

void SendError(httplib::Response& response, const Status& status) {
  SendJson(response, HttpStatusFor(status.code()),
           nlohmann::json{{"error", status.message()}}.dump(
               -1, ' ', false, nlohmann::json::error_handler_t::replace));
}

void PostWithBody(httplib::Server& server, const std::string& pattern, const Context& context,
                  BodyHandler handler) {
  server.Post(pattern, [&context, handler = std::move(handler)](
                           const httplib::Request& request, httplib::Response& response,
                           const httplib::ContentReader& read_content) {
    const size_t limit = context.options.max_body_bytes;
    std::string body;
    bool too_large = request.get_header_value<uint64_t>("Content-Length") > limit;
    const bool complete = !too_large && read_content([&](const char* data, size_t length) {
      if (length > limit - body.size()) {
        too_large = true;
        return false;
      }
      body.append(data, length);
      return true;
    });
    if (too_large) {
      SendJson(response, 413,
               nlohmann::json{{"error", fmt::format("the request body is larger than the server's "
                                                    "limit of {} bytes (--max-body-bytes)",
                                                    limit)}}
                   .dump());
      return;
    }
    if (!complete) {
      SendError(response, InvalidArgument("the request body could not be read completely"));
      return;
    }
    handler(request, body, response);
  });
}

}  // namespace http

class HttpServer::Impl {
 public:
  Impl(const HttpServerOptions& options, const InferenceService& inference, ModelManager& models,
       const MetricsRegistry& metrics, Logger logger)
      : options_(options),
        logger_(std::move(logger)),
        context_{options_, inference, models, metrics, logger_} {
    const int threads = options_.threads;
    server_.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
    server_.set_payload_max_length(options_.max_body_bytes);
    server_.set_keep_alive_max_count(100000);
    server_.set_read_timeout(30, 0);
    server_.set_write_timeout(30, 0);
    server_.set_tcp_nodelay(true);
    // SO_REUSEADDR only: the library's default also sets SO_REUSEPORT, which
    // lets a second agent bind the same port and silently take half the traffic.
    server_.set_socket_options([](socket_t socket) {
      const int yes = 1;
      setsockopt(socket, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    });
    // Exceptions stop here: a handler bug answers 500, it never takes the server down.
    server_.set_exception_handler([this](const httplib::Request& request,
                                         httplib::Response& response,
                                         const std::exception_ptr& error) {
      std::string what = "unknown error";
      try {
        std::rethrow_exception(error);
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      logger_.Error("{} {} failed: {}", request.method, request.path, what);
      http::SendError(response, Internal(fmt::format("internal error: {}", what)));
    });
    // Answers the library produces itself (no route, body too large) get the
    // same JSON error shape as ours.
    server_.set_error_handler([](const httplib::Request& request, httplib::Response& response) {
      if (!response.body.empty()) {
        return;
      }
      std::string message;
      switch (response.status) {
        case 404:
          message = fmt::format("no such endpoint: {} {}", request.method, request.path);
          break;
        case 400:
          message = request.method == "POST" && !request.has_header("Content-Length") &&
                            !request.has_header("Transfer-Encoding")
                        ? "a POST needs a body with a Content-Length (with curl: -d '')"
                        : "the request is not valid HTTP";
          break;
        case 413:
          message = "the request body is larger than the server's limit (--max-body-bytes)";
          break;
        default:
          message = fmt::format("the request could not be served (HTTP {})", response.status);
      }
      response.set_content(nlohmann::json{{"error", message}}.dump(), "application/json");
    });
    http::RegisterHealthRoutes(server_, context_);
    http::RegisterInferenceRoutes(server_, context_);
    http::RegisterRepositoryRoutes(server_, context_);
  }

  Status Start() {
    if (options_.port == 0) {
      port_ = server_.bind_to_any_port(options_.host);
    } else if (server_.bind_to_port(options_.host, options_.port)) {
      port_ = options_.port;
    }
    if (port_ <= 0) {
      return Unavailable(fmt::format("cannot listen on {}:{}: the address is in use or not local",
                                     options_.host, options_.port));
    }
    listener_ = std::thread([this] { server_.listen_after_bind(); });
    logger_.Info("REST API on http://{}:{}", options_.host, port_);
    return Status::Ok();
  }

  void Stop() {
    if (listener_.joinable()) {
      server_.stop();
      listener_.join();
    }
  }

  int port() const { return port_; }

 private:
  const HttpServerOptions options_;
  const Logger logger_;
  const http::Context context_;
  httplib::Server server_;
  std::thread listener_;
  int port_ = 0;
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
  return std::unique_ptr<HttpServer>(new HttpServer(
      std::make_unique<Impl>(options, inference, models, metrics, std::move(logger))));
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HttpServer::~HttpServer() { Stop(); }
Status HttpServer::Start() { return impl_->Start(); }
void HttpServer::Stop() { impl_->Stop(); }
int HttpServer::port() const { return impl_->port(); }

}  // namespace perch
