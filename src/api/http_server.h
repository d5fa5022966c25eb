// The KServe v2 / Open Inference Protocol REST front end: health, metadata,
// infer (JSON and the binary tensor extension), the repository extension
// and Prometheus metrics. A thin adapter: it decodes the wire format, calls
// InferenceService and ModelManager, and encodes their answers.
//
// Served by http::Server (src/http/): its I/O threads read and write, its
// handler threads run the routes. Tokens: the repository extension needs
// `management_token` and inference, model metadata and readiness need
// `api_token`, each when set (401 otherwise); health, /v2 and /metrics are
// always open. Network local (docs/network-local.md): with `peers` set,
// the location's peer token (`peer_token`, or the one the PeerDirectory
// holds) is accepted wherever `api_token` is, and is the only credential
// the peer routes take: `GET /perch/v1/peer` and the blobs of `blobs`,
// read-only, at `HEAD`/`GET /v2/<repository>/blobs/<digest>`.
//
// Forwarding (api/forwarding.h) when given a PeerDirectory: model metadata,
// readiness and infer for a model served by another agent of the location
// are answered by it; those routes name the device that answered in the
// header `Perch-Device`. The repository index lists the location's models
// when asked with {"location": true}.
//
// Threading: Start and Stop are called from one controlling thread.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "api/forwarding.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/status.h"
#include "http/server.h"
#include "models/inference_service.h"
#include "models/model_manager.h"

namespace perch {

class BlobStore;
class PeerDirectory;

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;                   // 0: any free port, see HttpServer::port()
  size_t max_body_bytes = 64 << 20;  // also the limit after decompression
  size_t max_json_depth = 64;
  int threads = 16;                      // handler threads: requests handled at once
  std::string server_version = "0.0.0";  // reported by GET /v2
  http::TlsOptions tls;                  // cert_file set: HTTPS only
  std::string management_token;          // set: needed by index, load and unload
  std::string api_token;                 // set: needed by infer, model metadata and readiness
  ForwardingOptions forwarding;
  std::string peer_token{};          // set: the location's peer credential (also accepted)
  PeerDirectory* peers = nullptr;    // set: network local; not owned, outlives the server
  const BlobStore* blobs = nullptr;  // set: verified blobs served to peers; not owned
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
  // "http" or "https".
  std::string_view scheme() const;

 private:
  class Impl;
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace perch
