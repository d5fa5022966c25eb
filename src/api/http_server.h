// The KServe v2 / Open Inference Protocol REST front end: health, metadata,
// infer (JSON and the binary tensor extension), the repository extension
// and Prometheus metrics. A thin adapter: it decodes the wire format, calls
// InferenceService and ModelManager, and encodes their answers.
//
// Threading: requests are served by a pool of I/O threads; Start and Stop
// are called from one controlling thread.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "core/log.h"
#include "core/metrics.h"
#include "core/status.h"
#include "models/inference_service.h"
#include "models/model_manager.h"

namespace perch {

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;                   // 0: any free port, see HttpServer::port()
  size_t max_body_bytes = 64 << 20;  // also the limit after decompression
  size_t max_json_depth = 64;
  int threads = 16;                      // I/O threads; each keep-alive client holds one
  std::string server_version = "0.0.0";  // reported by GET /v2
};

class HttpServer {
 public:
  static Result<std::unique_ptr<HttpServer>> Create(const HttpServerOptions& options,
                                                    const InferenceService& inference,
                                                    ModelManager& models,
                                                    const MetricsRegistry& metrics, Logger logger);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and starts serving. Unavailable if the address cannot be bound.
  Status Start();
  // Stops accepting, lets requests in flight finish, and returns.
  void Stop();
  // The bound port (useful after asking for port 0).
  int port() const;

 private:
  class Impl;
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace perch
