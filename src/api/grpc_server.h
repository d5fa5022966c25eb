// The Open Inference Protocol over gRPC: inference.GRPCInferenceService with
// the messages and field numbers of KServe v2, so existing KServe and Triton
// clients work unchanged. A thin adapter over InferenceService, like REST.
//
// TLS (and mutual TLS) with the same certificate options as REST. When
// `api_token` is set, ModelInfer, ModelMetadata and ModelReady need it in
// the `authorization` metadata (the forms http/credentials.h accepts), and
// answer UNAUTHENTICATED otherwise; the server calls stay open. The
// location's peer token (`peer_token`, or the one `peers` holds) is
// accepted as well, so that requests a peer forwards pass.
//
// Forwarding (api/forwarding.h) when given a PeerDirectory: ModelInfer,
// ModelMetadata and ModelReady for a model served by another agent of the
// location go to it; all three name the device that answered in the
// trailing metadata `perch-device`.
//
// Threading: RPCs are served by gRPC's own thread pool; Start and Stop are
// called from one controlling thread.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "api/forwarding.h"
#include "core/log.h"
#include "core/status.h"
#include "http/server.h"
#include "models/inference_service.h"
#include "models/model_manager.h"

namespace perch {

class PeerDirectory;

struct GrpcServerOptions {
  std::string host = "127.0.0.1";
  int port = 8001;                      // 0: any free port, see GrpcServer::port()
  size_t max_message_bytes = 64 << 20;  // larger requests get RESOURCE_EXHAUSTED
  std::string server_version = "0.0.0";
  http::TlsOptions tls;      // cert_file set: TLS only; client_ca_file set: client certificates
  std::string api_token;     // set: needed by ModelInfer, ModelMetadata and ModelReady
  std::string peer_token{};  // set: the location's peer credential (also accepted)
  PeerDirectory* peers = nullptr;  // set: network local; not owned, outlives the server
  ForwardingOptions forwarding;
};

class GrpcServer {
 public:
  // InvalidArgument for a message limit out of range; NotFound for TLS
  // files that cannot be read.
  static Result<std::unique_ptr<GrpcServer>> Create(const GrpcServerOptions& options,
                                                    const InferenceService& inference,
                                                    const ModelManager& models, Logger logger);
  ~GrpcServer();
  GrpcServer(const GrpcServer&) = delete;
  GrpcServer& operator=(const GrpcServer&) = delete;

  // Binds and starts serving. Unavailable if the address cannot be bound.
  Status Start();
  // Refuses new inferences, waits (up to 30 s) for those in flight, and stops.
  void Stop();
  int port() const;

 private:
  class Impl;
  explicit GrpcServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace perch
