#include "api/grpc_server.h"

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

#include "api/grpc_codec.h"
#include "api/grpc_forwarder.h"
#include "api/peer_auth.h"
#include "grpc_predict_v2.grpc.pb.h"
#include "http/credentials.h"

namespace perch {
namespace {

using grpc::ServerContext;
using inference::GRPCInferenceService;

void FillTensorMetadata(
    const std::vector<TensorSpec>& specs,
    google::protobuf::RepeatedPtrField<inference::ModelMetadataResponse::TensorMetadata>* out) {
  for (const auto& spec : specs) {
    auto* tensor = out->Add();
    tensor->set_name(spec.name);
    tensor->set_datatype(std::string(ToString(spec.datatype)));
    for (const int64_t dim : spec.shape) {
      tensor->add_shape(dim);
    }
  }
}

class InferenceServiceImpl final : public GRPCInferenceService::Service {
 public:
  InferenceServiceImpl(const GrpcServerOptions& options, const InferenceService& inference,
                       const ModelManager& models, const Logger& logger)
      : options_(options),
        inference_(inference),
        models_(models),
        logger_(logger),
        peers_(options.peers) {
    if (peers_ != nullptr) {
      forwarder_.emplace(options_.forwarding, *peers_, options_.max_message_bytes, logger_);
    }
  }

  grpc::Status ServerLive(ServerContext*, const inference::ServerLiveRequest*,
                          inference::ServerLiveResponse* response) override {
    response->set_live(true);
    return grpc::Status::OK;
  }

  grpc::Status ServerReady(ServerContext*, const inference::ServerReadyRequest*,
                           inference::ServerReadyResponse* response) override {
    response->set_ready(models_.Ready());
    return grpc::Status::OK;
  }

  grpc::Status ModelReady(ServerContext* context, const inference::ModelReadyRequest* request,
                          inference::ModelReadyResponse* response) override {
    std::string served_by = options_.forwarding.device;
    grpc::Status status = Ready(*context, *request, response, served_by);
    NameDevice(*context, served_by);
    return status;
  }

  grpc::Status Ready(ServerContext& context, const inference::ModelReadyRequest& request,
                     inference::ModelReadyResponse* response, std::string& served_by) {
    if (grpc::Status allowed = Authorize(context); !allowed.ok()) {
      return allowed;
    }
    switch (Route(context, request.name(), request.version())) {
      case api::Destination::kPeer:
        return forwarder_->Ready(context.deadline(), request, response, served_by);
      case api::Destination::kNowhere:
        return Nowhere(request.name());
      case api::Destination::kHere:
        break;
    }
    const auto model = models_.Acquire(request.name(), request.version());
    if (!model.ok() && model.status().code() != StatusCode::kUnavailable) {
      return grpc_api::ToGrpcStatus(model.status());
    }
    response->set_ready(model.ok());
    return grpc::Status::OK;
  }

  grpc::Status ServerMetadata(ServerContext*, const inference::ServerMetadataRequest*,
                              inference::ServerMetadataResponse* response) override {
    response->set_name("perch");
    response->set_version(options_.server_version);
    response->add_extensions("model_repository");
    response->add_extensions("metrics");
    return grpc::Status::OK;
  }

  grpc::Status ModelMetadata(ServerContext* context, const inference::ModelMetadataRequest* request,
                             inference::ModelMetadataResponse* response) override {
    std::string served_by = options_.forwarding.device;
    grpc::Status status = Metadata(*context, *request, response, served_by);
    NameDevice(*context, served_by);
    return status;
  }

  grpc::Status Metadata(ServerContext& context, const inference::ModelMetadataRequest& request,
                        inference::ModelMetadataResponse* response, std::string& served_by) {
    if (grpc::Status allowed = Authorize(context); !allowed.ok()) {
      return allowed;
    }
    switch (Route(context, request.name(), request.version())) {
      case api::Destination::kPeer:
        return forwarder_->Metadata(context.deadline(), request, response, served_by);
      case api::Destination::kNowhere:
        return Nowhere(request.name());
      case api::Destination::kHere:
        break;
    }
    const auto model = models_.Acquire(request.name(), request.version());
    if (!model.ok()) {
      return grpc_api::ToGrpcStatus(model.status());
    }
    response->set_name(request.name());
    for (const int64_t version : models_.ReadyVersions(request.name())) {
      response->add_versions(std::to_string(version));
    }
    response->set_platform("onnxruntime_onnx");
    FillTensorMetadata((*model)->signature().inputs, response->mutable_inputs());
    FillTensorMetadata((*model)->signature().outputs, response->mutable_outputs());
    return grpc::Status::OK;
  }

  grpc::Status ModelInfer(ServerContext* context, const inference::ModelInferRequest* request,
                          inference::ModelInferResponse* response) override {
    std::string served_by = options_.forwarding.device;
    grpc::Status status = Infer(*context, *request, response, served_by);
    NameDevice(*context, served_by);
    return status;
  }

  grpc::Status Infer(ServerContext& context, const inference::ModelInferRequest& request,
                     inference::ModelInferResponse* response, std::string& served_by) {
    const InFlight in_flight(*this);
    if (stopping_.load()) {
      return {grpc::StatusCode::UNAVAILABLE, "the agent is shutting down"};
    }
    if (grpc::Status allowed = Authorize(context); !allowed.ok()) {
      return allowed;
    }
    try {
      switch (Route(context, request.model_name(), request.model_version())) {
        case api::Destination::kPeer:
          return forwarder_->Infer(context.deadline(), request, response, served_by);
        case api::Destination::kNowhere:
          return Nowhere(request.model_name());
        case api::Destination::kHere:
          break;
      }
      auto decoded = grpc_api::DecodeInferRequest(request);
      if (!decoded.ok()) {
        inference_.RecordUndecodable(request.model_name(), request.model_version());
        return grpc_api::ToGrpcStatus(decoded.status());
      }
      LimitToClientDeadline(context, decoded->request);
      const auto result = inference_.Infer(std::move(decoded->request));
      if (!result.ok()) {
        return grpc_api::ToGrpcStatus(result.status());
      }
      grpc_api::EncodeInferResponse(*result, decoded->raw_outputs, *response);
      return grpc::Status::OK;
    } catch (const std::exception& error) {
      logger_.Error("ModelInfer failed: {}", error.what());
      return {grpc::StatusCode::INTERNAL, fmt::format("internal error: {}", error.what())};
    }
  }

  // Refuses new inferences and waits (up to `grace`) for those in flight.
  void Drain(std::chrono::milliseconds grace) {
    stopping_.store(true);
    const auto until = std::chrono::steady_clock::now() + grace;
    while (in_flight_.load() > 0 && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

 private:
  // OK when no API token is set or the `authorization` metadata carries it,
  // read by the same parser as REST's Authorization header.
  grpc::Status Authorize(const ServerContext& context) const {
    if (options_.api_token.empty()) {
      return grpc::Status::OK;
    }
    http::Request request;
    const auto& metadata = context.client_metadata();
    if (const auto found = metadata.find("authorization"); found != metadata.end()) {
      request.headers.Set("Authorization", std::string(found->second.data(), found->second.size()));
    }
    return grpc_api::ToGrpcStatus(api::RequireApiOrPeerToken(request, options_.api_token,
                                                             options_.peer_token, options_.peers));
  }

  // Where a request for `model` goes: here unless a peer serves it and it
  // has not hopped already.
  api::Destination Route(const ServerContext& context, const std::string& model,
                         const std::string& version) const {
    const bool forwarded = context.client_metadata().contains(api::kForwardedByMetadata);
    return api::RouteRequest(models_, peers_, forwarded, model, version);
  }

  grpc::Status Nowhere(const std::string& model) const {
    return grpc_api::ToGrpcStatus(api::NowhereServed(model, options_.forwarding.device));
  }

  static void NameDevice(ServerContext& context, const std::string& device) {
    if (!device.empty()) {
      context.AddTrailingMetadata(api::kDeviceMetadata, device);
    }
  }

  // Counts an inference in flight for as long as it lives.
  class InFlight {
   public:
    explicit InFlight(InferenceServiceImpl& service) : service_(service) { ++service_.in_flight_; }
    ~InFlight() { --service_.in_flight_; }
    InFlight(const InFlight&) = delete;
    InFlight& operator=(const InFlight&) = delete;

   private:
    InferenceServiceImpl& service_;
  };

  // A client deadline shortens the request's own timeout, never lengthens it.
  static void LimitToClientDeadline(const ServerContext& context, InferRequest& request) {
    const auto deadline = context.deadline();
    if (deadline == std::chrono::system_clock::time_point::max()) {
      return;
    }
    const auto left = std::chrono::duration_cast<std::chrono::microseconds>(
        deadline - std::chrono::system_clock::now());
    const auto limit = std::max(left, std::chrono::microseconds(1));
    if (request.timeout.count() == 0 || limit < request.timeout) {
      request.timeout = limit;
    }
  }

  const GrpcServerOptions& options_;
  const InferenceService& inference_;
  const ModelManager& models_;
  const Logger& logger_;
  PeerDirectory* const peers_;
  std::optional<api::GrpcForwarder> forwarder_;
  std::atomic<bool> stopping_{false};
  std::atomic<int> in_flight_{0};
};

Result<std::string> ReadPem(const std::string& path, std::string_view what) {
  std::ifstream file(path);
  if (!file) {
    return NotFound(fmt::format("the TLS {} file '{}' cannot be read", what, path));
  }
  std::ostringstream text;
  text << file.rdbuf();
  return text.str();
}

// The certificate and key are checked against each other by http::Server
// (the REST listener takes the same files); gRPC reports bad PEM at Start.
Result<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(const http::TlsOptions& tls) {
  if (!tls.enabled()) {
    return grpc::InsecureServerCredentials();
  }
  PERCH_ASSIGN_OR_RETURN(std::string cert, ReadPem(tls.cert_file, "certificate"));
  PERCH_ASSIGN_OR_RETURN(std::string key, ReadPem(tls.key_file, "key"));
  grpc::SslServerCredentialsOptions ssl(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  ssl.pem_key_cert_pairs.push_back({std::move(key), std::move(cert)});
  if (!tls.client_ca_file.empty()) {
    PERCH_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadPem(tls.client_ca_file, "client CA"));
    ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(ssl);
}

}  // namespace

class GrpcServer::Impl {
 public:
  Impl(const GrpcServerOptions& options, std::shared_ptr<grpc::ServerCredentials> credentials,
       const InferenceService& inference, const ModelManager& models, Logger logger)
      : options_(options),
        logger_(std::move(logger)),
        credentials_(std::move(credentials)),
        service_(options_, inference, models, logger_) {}

  Status Start() {
    grpc::ServerBuilder builder;
    const std::string address = fmt::format("{}:{}", options_.host, options_.port);
    builder.AddListeningPort(address, credentials_, &port_);
    // As for REST: a second agent on the same port must fail, not share it.
    builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    builder.SetMaxReceiveMessageSize(static_cast<int>(options_.max_message_bytes));
    builder.SetMaxSendMessageSize(static_cast<int>(options_.max_message_bytes));
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    if (!server_ || port_ <= 0) {
      server_.reset();
      return Unavailable(
          fmt::format("cannot listen for gRPC on {}: the address is in use or not "
                      "local",
                      address));
    }
    logger_.Info("gRPC API on {}:{}{}", options_.host, port_,
                 options_.tls.enabled() ? " (TLS)" : "");
    return Status::Ok();
  }

  void Stop() {
    if (server_) {
      // Drain first, then shut down at once: a deadline given to Shutdown is
      // also spent waiting on idle client connections.
      service_.Drain(std::chrono::seconds(30));
      server_->Shutdown(std::chrono::system_clock::now());
      server_.reset();
    }
  }

  int port() const { return port_; }

 private:
  const GrpcServerOptions options_;
  const Logger logger_;
  const std::shared_ptr<grpc::ServerCredentials> credentials_;
  InferenceServiceImpl service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

Result<std::unique_ptr<GrpcServer>> GrpcServer::Create(const GrpcServerOptions& options,
                                                       const InferenceService& inference,
                                                       const ModelManager& models, Logger logger) {
  if (options.max_message_bytes < 1024 || options.max_message_bytes > (size_t{1} << 31) - 1) {
    return InvalidArgument("the gRPC message limit must be from 1 KiB to 2 GiB");
  }
  PERCH_ASSIGN_OR_RETURN(auto credentials, ServerCredentials(options.tls));
  return std::unique_ptr<GrpcServer>(new GrpcServer(std::make_unique<Impl>(
      options, std::move(credentials), inference, models, std::move(logger))));
}

GrpcServer::GrpcServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GrpcServer::~GrpcServer() { Stop(); }
Status GrpcServer::Start() { return impl_->Start(); }
void GrpcServer::Stop() { impl_->Stop(); }
int GrpcServer::port() const { return impl_->port(); }

}  // namespace perch
