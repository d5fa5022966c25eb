// Internal to api/: gRPC forwarding (forwarding.h). Calls the same RPC on a
// peer's gRPC port with the hop metadata and the peer token in place of the
// client's credential, within the client's own deadline (or the forwarding
// timeout when it gave none), and hands the peer's answer back.
//
// Connections: one channel per peer address, kept for the agent's life
// (a channel reconnects by itself and multiplexes concurrent calls).
//
// Threading: every method is thread-safe.
#pragma once

#include <grpcpp/support/status.h>

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "api/forwarding.h"
#include "core/log.h"
#include "grpc_predict_v2.pb.h"
#include "peers/peer_directory.h"

namespace perch::api {

class GrpcForwarder {
 public:
  using Deadline = std::chrono::system_clock::time_point;  // max(): none

  GrpcForwarder(const ForwardingOptions& options, PeerDirectory& peers, size_t max_message_bytes,
                const Logger& logger);
  ~GrpcForwarder();
  GrpcForwarder(const GrpcForwarder&) = delete;
  GrpcForwarder& operator=(const GrpcForwarder&) = delete;

  // Each answers the RPC with a peer's answer and sets `served_by` to the
  // device that gave it. UNAVAILABLE when no peer could answer (every one
  // serving the model failed, or one refused this agent's peer token);
  // DEADLINE_EXCEEDED when `deadline` passed first.
  grpc::Status Infer(Deadline deadline, const inference::ModelInferRequest& request,
                     inference::ModelInferResponse* response, std::string& served_by);
  grpc::Status Metadata(Deadline deadline, const inference::ModelMetadataRequest& request,
                        inference::ModelMetadataResponse* response, std::string& served_by);
  grpc::Status Ready(Deadline deadline, const inference::ModelReadyRequest& request,
                     inference::ModelReadyResponse* response, std::string& served_by);

 private:
  class Channels;  // the stubs by peer address, in grpc_forwarder.cpp

  template <typename Request, typename Response, typename Call>
  grpc::Status Forward(Deadline deadline, std::string_view model, const Request& request,
                       Response* response, std::string& served_by, Call call);

  const ForwardingOptions& options_;
  PeerDirectory& peers_;
  const Logger& logger_;
  const std::unique_ptr<Channels> channels_;
};

}  // namespace perch::api
