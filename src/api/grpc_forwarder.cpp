#include "api/grpc_forwarder.h"

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>

#include <map>
#include <mutex>

#include "core/files.h"
#include "grpc_predict_v2.grpc.pb.h"

namespace perch::api {
namespace {

bool Expired(GrpcForwarder::Deadline deadline) {
  return deadline <= std::chrono::system_clock::now();
}

}  // namespace

class GrpcForwarder::Channels {
 public:
  using Stub = inference::GRPCInferenceService::Stub;

  Channels(const ForwardingOptions& options, size_t max_message_bytes)
      : options_(options), max_message_bytes_(max_message_bytes) {}

  // The stub for `peer`'s gRPC address, made on first use.
  Result<Stub*> For(const Peer& peer);

 private:
  const ForwardingOptions& options_;
  const size_t max_message_bytes_;
  // std::mutex, not core/thread_annotations.h: gRPC defines the same macro names.
  std::mutex mutex_;
  // By peer gRPC address; never erased, so a Stub* stays valid. Guarded by mutex_.
  std::map<std::string, std::unique_ptr<Stub>, std::less<>> stubs_;
};

GrpcForwarder::GrpcForwarder(const ForwardingOptions& options, PeerDirectory& peers,
                             size_t max_message_bytes, const Logger& logger)
    : options_(options),
      peers_(peers),
      logger_(logger),
      channels_(std::make_unique<Channels>(options, max_message_bytes)) {}

GrpcForwarder::~GrpcForwarder() = default;

grpc::Status GrpcForwarder::Infer(Deadline deadline, const inference::ModelInferRequest& request,
                                  inference::ModelInferResponse* response, std::string& served_by) {
  return Forward(deadline, request.model_name(), request, response, served_by,
                 [](auto& stub, grpc::ClientContext* client, const auto& in, auto* out) {
                   return stub.ModelInfer(client, in, out);
                 });
}

grpc::Status GrpcForwarder::Metadata(Deadline deadline,
                                     const inference::ModelMetadataRequest& request,
                                     inference::ModelMetadataResponse* response,
                                     std::string& served_by) {
  return Forward(deadline, request.name(), request, response, served_by,
                 [](auto& stub, grpc::ClientContext* client, const auto& in, auto* out) {
                   return stub.ModelMetadata(client, in, out);
                 });
}

grpc::Status GrpcForwarder::Ready(Deadline deadline, const inference::ModelReadyRequest& request,
                                  inference::ModelReadyResponse* response, std::string& served_by) {
  return Forward(deadline, request.name(), request, response, served_by,
                 [](auto& stub, grpc::ClientContext* client, const auto& in, auto* out) {
                   return stub.ModelReady(client, in, out);
                 });
}

template <typename Request, typename Response, typename Call>
grpc::Status GrpcForwarder::Forward(Deadline deadline, std::string_view model,
                                    const Request& request, Response* response,
                                    std::string& served_by, Call call) {
  std::string tried;
  std::string last_failure;
  // The first peer, and if it cannot be reached, one more.
  for (int attempt = 0; attempt < 2 && !Expired(deadline); ++attempt) {
    auto lease = peers_.Acquire(model);
    if (!lease) {
      break;
    }
    const Peer& peer = lease->peer();
    auto stub = channels_->For(peer);
    if (!stub.ok()) {
      return {grpc::StatusCode::UNAVAILABLE, stub.status().message()};
    }
    grpc::ClientContext client;
    client.set_deadline(deadline == Deadline::max()
                            ? std::chrono::system_clock::now() + options_.timeout
                            : deadline);
    if (!options_.device.empty()) {
      client.AddMetadata(kForwardedByMetadata, options_.device);
    }
    if (const std::string token = peers_.Token(); !token.empty()) {
      client.AddMetadata("authorization", "Bearer " + token);
    }
    grpc::Status status = call(**stub, &client, request, response);
    // A perch agent names itself on every answer of these calls: without
    // that name (and without success) the call never reached its service.
    const auto& trailers = client.GetServerTrailingMetadata();
    const auto device = trailers.find(kDeviceMetadata);
    const bool answered = status.ok() || device != trailers.end();
    const auto code = status.error_code();
    // The client's own deadline passing is no fault of the peer's.
    if (!answered && deadline != Deadline::max() && Expired(deadline)) {
      return status;
    }
    if (!answered &&
        (code == grpc::StatusCode::UNAVAILABLE || code == grpc::StatusCode::DEADLINE_EXCEEDED)) {
      logger_.Warn("forwarding {} to {} ({}) failed, avoiding it for a while: {}", model,
                   peer.device, peer.grpc_address, status.error_message());
      peers_.MarkFailed(peer.device);
      tried += tried.empty() ? peer.device : ", " + peer.device;
      last_failure = status.error_message();
      response->Clear();
      continue;
    }
    if (code == grpc::StatusCode::UNAUTHENTICATED || code == grpc::StatusCode::PERMISSION_DENIED) {
      return {grpc::StatusCode::UNAVAILABLE,
              fmt::format("agent {} of this location refused this agent's peer token ({}); give "
                          "every agent of the location the same --peer-token",
                          peer.device, status.error_message())};
    }
    served_by = device == trailers.end()
                    ? peer.device
                    : std::string(device->second.data(), device->second.size());
    return status;
  }
  if (Expired(deadline)) {
    return {grpc::StatusCode::DEADLINE_EXCEEDED,
            fmt::format("the deadline passed while forwarding to {}", tried)};
  }
  if (tried.empty()) {
    return {grpc::StatusCode::UNAVAILABLE, std::string(NoHealthyPeer(model).message())};
  }
  return {grpc::StatusCode::UNAVAILABLE,
          fmt::format("model '{}' is served by other agents of this location, but {} did not "
                      "answer: {}",
                      model, tried, last_failure)};
}

Result<GrpcForwarder::Channels::Stub*> GrpcForwarder::Channels::For(const Peer& peer) {
  if (peer.grpc_address.empty()) {
    return Unavailable(fmt::format(
        "agent {} of this location serves the model but announced no gRPC address", peer.device));
  }
  const std::lock_guard lock(mutex_);
  if (auto it = stubs_.find(peer.grpc_address); it != stubs_.end()) {
    return it->second.get();
  }
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  // A peer whose REST port speaks TLS speaks it on its gRPC port too (one
  // certificate for both, as `perch serve --tls-cert` sets them).
  if (peer.url.starts_with("https://")) {
    grpc::SslCredentialsOptions ssl;
    if (!options_.ca_file.empty()) {
      PERCH_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadFile(options_.ca_file));
    }
    credentials = grpc::SslCredentials(ssl);
  }
  grpc::ChannelArguments arguments;
  arguments.SetMaxReceiveMessageSize(static_cast<int>(max_message_bytes_));
  arguments.SetMaxSendMessageSize(static_cast<int>(max_message_bytes_));
  // A peer that comes back is used again soon after the directory stops avoiding it.
  arguments.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  arguments.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS,
                   static_cast<int>(options_.connect_timeout.count()));
  auto channel = grpc::CreateCustomChannel(peer.grpc_address, credentials, arguments);
  auto [it, inserted] =
      stubs_.emplace(peer.grpc_address, inference::GRPCInferenceService::NewStub(channel));
  return it->second.get();
}

}  // namespace perch::api
