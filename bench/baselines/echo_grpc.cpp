// Baseline: a bare gRPC++ server implementing inference.GRPCInferenceService
// (proto/grpc_predict_v2.proto) whose ModelInfer answers every request with
// one fixed output of --output-bytes raw bytes (default 1024: FP32 [1,256]),
// without looking at the inputs. It measures what gRPC alone costs.
//
// Same server shape as perch's (src/api/grpc_server.cpp): the synchronous
// generated Service, grpc::ServerBuilder with default thread settings and the
// same 64 MiB message limits.
//
//   bench_echo_grpc [--host 127.0.0.1] [--port 0] [--output-bytes 1024]
//
// Prints "listening on PORT" on stdout once bound; SIGTERM ends it.
#include <grpcpp/grpcpp.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "grpc_predict_v2.grpc.pb.h"

namespace {

using grpc::ServerContext;

class EchoService final : public inference::GRPCInferenceService::Service {
 public:
  explicit EchoService(size_t output_bytes) : raw_(output_bytes, '\0') {}

  grpc::Status ServerLive(ServerContext*, const inference::ServerLiveRequest*,
                          inference::ServerLiveResponse* response) override {
    response->set_live(true);
    return grpc::Status::OK;
  }

  grpc::Status ServerReady(ServerContext*, const inference::ServerReadyRequest*,
                           inference::ServerReadyResponse* response) override {
    response->set_ready(true);
    return grpc::Status::OK;
  }

  grpc::Status ModelReady(ServerContext*, const inference::ModelReadyRequest*,
                          inference::ModelReadyResponse* response) override {
    response->set_ready(true);
    return grpc::Status::OK;
  }

  grpc::Status ModelInfer(ServerContext*, const inference::ModelInferRequest* request,
                          inference::ModelInferResponse* response) override {
    response->set_model_name(request->model_name());
    response->set_model_version("1");
    response->set_id(request->id());
    auto* output = response->add_outputs();
    output->set_name("output");
    output->set_datatype("FP32");
    output->add_shape(1);
    output->add_shape(static_cast<int64_t>(raw_.size() / 4));
    response->add_raw_output_contents(raw_);
    return grpc::Status::OK;
  }

 private:
  const std::string raw_;
};

[[noreturn]] void Usage(const std::string& error) {
  std::fprintf(stderr,
               "error: %s\nusage: bench_echo_grpc [--host H] [--port P] [--output-bytes N]\n",
               error.c_str());
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  std::string host = "127.0.0.1";
  int port = 0;
  size_t output_bytes = 1024;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        Usage("missing value after " + arg);
      }
      return argv[++i];
    };
    if (arg == "--host") {
      host = value();
    } else if (arg == "--port") {
      port = std::stoi(value());
    } else if (arg == "--output-bytes") {
      output_bytes = std::stoul(value());
    } else {
      Usage("unknown argument " + arg);
    }
  }

  EchoService service(output_bytes);
  grpc::ServerBuilder builder;
  int bound = 0;
  builder.AddListeningPort(host + ":" + std::to_string(port), grpc::InsecureServerCredentials(),
                           &bound);
  builder.SetMaxReceiveMessageSize(64 << 20);
  builder.SetMaxSendMessageSize(64 << 20);
  builder.RegisterService(&service);
  const std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || bound <= 0) {
    std::fprintf(stderr, "cannot listen on %s:%d\n", host.c_str(), port);
    return 1;
  }
  std::printf("listening on %d\n", bound);
  std::fflush(stdout);
  server->Wait();
  return 0;
}
