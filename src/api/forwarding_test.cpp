// Forwarding between real agents in one process: each with its own models
// (the fake engine), REST and gRPC servers on loopback, and a peer directory
// filled by hand, as --peer or the hub would fill it.
#include "api/forwarding.h"

#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "api/grpc_server.h"
#include "api/http_server.h"
#include "core/files.h"
#include "grpc_predict_v2.grpc.pb.h"
#include "http/client.h"
#include "models/scheduler.h"
#include "testing/fake_engine.h"

namespace perch {
namespace {

namespace fs = std::filesystem;

constexpr char kClientToken[] = "client-secret";
constexpr char kPeerToken[] = "peer-secret";

// A port on loopback that nothing listens on: bound, then closed.
int ClosedPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  EXPECT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length), 0);
  ::close(fd);
  return ntohs(address.sin_port);
}

// One agent: a repository with `model` (its outputs add `add` to the input),
// REST and gRPC on free loopback ports, forwarding through `peers`.
// `api_token` guards its OIP routes, which also take the location's
// `peer_token`, the one forwarded requests carry.
class Agent {
 public:
  Agent(const fs::path& root, const std::string& device, const std::string& model, float add,
        const std::string& api_token, const std::string& peer_token)
      : repository_(root / device),
        peers_(PeerDirectoryOptions{.self_device = device}),
        models_(ModelManagerOptions{.repository = repository_}, engine_, metrics_,
                Logger::ToStderr(LogLevel::kWarn, device)),
        scheduler_(SchedulerOptions{.workers = 2}),
        inference_(models_, scheduler_) {
    FakeModel fake;
    fake.add = add;
    engine_.SetModel("model-" + model, fake);
    fs::create_directories(repository_ / model / "1");
    EXPECT_TRUE(
        WriteFileAtomically(repository_ / model / "1" / "model.onnx", "model-" + model).ok());
    EXPECT_TRUE(models_.Start().ok());
    scheduler_.Start();

    http_options_.port = 0;
    http_options_.threads = 4;
    http_options_.api_token = api_token;
    peers_.SetToken(peer_token);
    http_options_.peers = &peers_;
    http_options_.forwarding.device = device;
    http_ = HttpServer::Create(http_options_, inference_, models_, metrics_,
                               Logger::ToStderr(LogLevel::kWarn, device))
                .value();
    EXPECT_TRUE(http_->Start().ok());
    grpc_options_.port = 0;
    grpc_options_.api_token = api_token;
    grpc_options_.peers = &peers_;
    grpc_options_.forwarding = http_options_.forwarding;
    grpc_ = GrpcServer::Create(grpc_options_, inference_, models_,
                               Logger::ToStderr(LogLevel::kWarn, device))
                .value();
    EXPECT_TRUE(grpc_->Start().ok());
    self_ = Peer{.device = device,
                 .url = "http://127.0.0.1:" + std::to_string(http_->port()),
                 .grpc_address = "127.0.0.1:" + std::to_string(grpc_->port()),
                 .models = {model},
                 .blobs = {}};
  }

  ~Agent() {
    grpc_->Stop();
    http_->Stop();
    scheduler_.Stop();
    models_.Stop();
  }

  // How the others list this agent in their directories.
  const Peer& self() const { return self_; }
  PeerDirectory& peers() { return peers_; }
  std::string url() const { return self_.url; }
  const std::string& grpc_address() const { return self_.grpc_address; }
  FakeRuns& runs() { return engine_.runs(); }

 private:
  const fs::path repository_;
  FakeEngine engine_;
  MetricsRegistry metrics_;
  PeerDirectory peers_;
  ModelManager models_;
  Scheduler scheduler_;
  const InferenceService inference_;
  HttpServerOptions http_options_;
  GrpcServerOptions grpc_options_;
  std::unique_ptr<HttpServer> http_;
  std::unique_ptr<GrpcServer> grpc_;
  Peer self_;
};

constexpr char kInferBody[] =
    R"({"inputs":[{"name":"x","datatype":"FP32","shape":[1,2],"data":[1.5,2.5]}]})";

class ForwardingTest : public ::testing::Test {
 protected:
  ForwardingTest()
      : root_(fs::path(::testing::TempDir()) /
              ("perch-forwarding-" + std::to_string(getpid()) + "-" +
               ::testing::UnitTest::GetInstance()->current_test_info()->name())) {
    fs::remove_all(root_);
    // alpha serves "a" (adds 1), beta serves "b" (adds 2).
    alpha_ = std::make_unique<Agent>(root_, "alpha", "a", 1, kClientToken, kPeerToken);
    beta_ = std::make_unique<Agent>(root_, "beta", "b", 2, kClientToken, kPeerToken);
    alpha_->peers().Replace("static", {beta_->self()});
    beta_->peers().Replace("static", {alpha_->self()});
    client_ = http::Client::Create({}).value();
  }

  ~ForwardingTest() override {
    alpha_.reset();
    beta_.reset();
    fs::remove_all(root_);
  }

  http::ClientResponse Send(const std::string& method, const std::string& url,
                            const std::string& body = "", const http::Headers& extra = {}) {
    http::ClientRequest request;
    request.method = method;
    request.url = url;
    request.headers = extra;
    request.headers.Set("Authorization", std::string("Bearer ") + kClientToken);
    if (!body.empty()) {
      request.headers.Set("Content-Type", "application/json");
    }
    request.body = body;
    auto response = client_->Send(request);
    EXPECT_TRUE(response.ok()) << response.status().message();
    return response.ok() ? std::move(response).value() : http::ClientResponse{};
  }

  std::unique_ptr<inference::GRPCInferenceService::Stub> StubTo(const Agent& agent) {
    return inference::GRPCInferenceService::NewStub(
        grpc::CreateChannel(agent.grpc_address(), grpc::InsecureChannelCredentials()));
  }

  static void Authorize(grpc::ClientContext& context) {
    context.AddMetadata("authorization", std::string("Bearer ") + kClientToken);
  }

  static std::string DeviceOf(const grpc::ClientContext& context) {
    const auto& trailers = context.GetServerTrailingMetadata();
    const auto it = trailers.find("perch-device");
    return it == trailers.end() ? std::string() : std::string(it->second.data(), it->second.size());
  }

  static inference::ModelInferRequest InferRequest(const std::string& model) {
    inference::ModelInferRequest request;
    request.set_model_name(model);
    auto* input = request.add_inputs();
    input->set_name("x");
    input->set_datatype("FP32");
    input->add_shape(1);
    input->add_shape(2);
    input->mutable_contents()->add_fp32_contents(1.5F);
    input->mutable_contents()->add_fp32_contents(2.5F);
    return request;
  }

  fs::path root_;
  std::unique_ptr<Agent> alpha_;
  std::unique_ptr<Agent> beta_;
  std::unique_ptr<http::Client> client_;
};

TEST_F(ForwardingTest, RestInferForAModelServedByAPeerIsAnsweredByIt) {
  const auto forwarded = Send("POST", alpha_->url() + "/v2/models/b/infer", kInferBody);
  ASSERT_EQ(forwarded.status, 200) << forwarded.body;
  EXPECT_EQ(forwarded.headers.Value("Perch-Device"), "beta");
  const auto outputs = nlohmann::json::parse(forwarded.body)["outputs"];
  EXPECT_EQ(outputs[0]["data"], nlohmann::json({3.5, 4.5}));
  EXPECT_EQ(beta_->runs().started(), 1);

  const auto local = Send("POST", alpha_->url() + "/v2/models/a/infer", kInferBody);
  ASSERT_EQ(local.status, 200) << local.body;
  EXPECT_EQ(local.headers.Value("Perch-Device"), "alpha");
  EXPECT_EQ(nlohmann::json::parse(local.body)["outputs"][0]["data"], nlohmann::json({2.5, 3.5}));
}

TEST_F(ForwardingTest, RestMetadataAndReadinessAreForwarded) {
  const auto metadata = Send("GET", alpha_->url() + "/v2/models/b");
  ASSERT_EQ(metadata.status, 200) << metadata.body;
  EXPECT_EQ(metadata.headers.Value("Perch-Device"), "beta");
  EXPECT_EQ(nlohmann::json::parse(metadata.body)["name"], "b");
  const auto ready = Send("GET", alpha_->url() + "/v2/models/b/versions/1/ready");
  EXPECT_EQ(ready.status, 200) << ready.body;
  EXPECT_EQ(ready.headers.Value("Perch-Device"), "beta");
  // A version the peer does not have: its own 404, passed back.
  const auto missing = Send("GET", alpha_->url() + "/v2/models/b/versions/7/ready");
  EXPECT_EQ(missing.status, 404) << missing.body;
  EXPECT_EQ(missing.headers.Value("Perch-Device"), "beta");
}

TEST_F(ForwardingTest, RestBinaryTensorsPassThroughUndecoded) {
  const std::string json =
      R"({"inputs":[{"name":"x","datatype":"FP32","shape":[1,2],"parameters":{"binary_data_size":8}}],)"
      R"("outputs":[{"name":"y","parameters":{"binary_data":true}}]})";
  const float values[2] = {1.5F, 2.5F};
  std::string body = json;
  body.append(reinterpret_cast<const char*>(values), sizeof(values));
  http::Headers headers;
  headers.Set("Inference-Header-Content-Length", std::to_string(json.size()));
  const auto answer = Send("POST", alpha_->url() + "/v2/models/b/infer", body, headers);
  ASSERT_EQ(answer.status, 200) << answer.body;
  EXPECT_EQ(answer.headers.Value("Perch-Device"), "beta");
  const std::string length = answer.headers.Value("Inference-Header-Content-Length");
  ASSERT_FALSE(length.empty());
  const size_t json_size = std::stoul(length);
  ASSERT_EQ(answer.body.size(), json_size + 8);
  float out[2] = {};
  std::memcpy(out, answer.body.data() + json_size, sizeof(out));
  EXPECT_EQ(out[0], 3.5F);
  EXPECT_EQ(out[1], 4.5F);
}

TEST_F(ForwardingTest, RestRequestThatAlreadyHoppedIsAnsweredLocally) {
  http::Headers hop;
  hop.Set("Perch-Forwarded-By", "someone");
  const auto answer = Send("POST", alpha_->url() + "/v2/models/b/infer", kInferBody, hop);
  EXPECT_EQ(answer.status, 404) << answer.body;
  EXPECT_EQ(answer.headers.Value("Perch-Device"), "alpha");
  EXPECT_EQ(beta_->runs().started(), 0);
}

TEST_F(ForwardingTest, RestModelNobodyServesIsA404ThatSaysSo) {
  const auto answer = Send("POST", alpha_->url() + "/v2/models/nope/infer", kInferBody);
  EXPECT_EQ(answer.status, 404);
  EXPECT_NE(answer.body.find("no agent of this location serves model 'nope'"), std::string::npos)
      << answer.body;
  const auto metadata = Send("GET", alpha_->url() + "/v2/models/nope");
  EXPECT_EQ(metadata.status, 404);
}

TEST_F(ForwardingTest, RestPeerThatCannotBeReachedIsSkippedForTheNextOne) {
  // "attic" sorts before "beta": with nothing outstanding it is tried first.
  Peer dead{.device = "attic",
            .url = "http://127.0.0.1:" + std::to_string(ClosedPort()),
            .grpc_address = "127.0.0.1:" + std::to_string(ClosedPort()),
            .models = {"b"},
            .blobs = {}};
  alpha_->peers().Replace("static", {dead, beta_->self()});
  const auto answer = Send("POST", alpha_->url() + "/v2/models/b/infer", kInferBody);
  ASSERT_EQ(answer.status, 200) << answer.body;
  EXPECT_EQ(answer.headers.Value("Perch-Device"), "beta");
  // Marked failed: the next request goes straight to beta.
  const auto lease = alpha_->peers().Acquire("b");
  ASSERT_TRUE(lease.has_value());
  EXPECT_EQ(lease->peer().device, "beta");
}

TEST_F(ForwardingTest, RestOnlyPeerUnreachableIs503) {
  Peer dead{.device = "attic",
            .url = "http://127.0.0.1:" + std::to_string(ClosedPort()),
            .grpc_address = {},
            .models = {"b"},
            .blobs = {}};
  alpha_->peers().Replace("static", {dead});
  const auto first = Send("POST", alpha_->url() + "/v2/models/b/infer", kInferBody);
  EXPECT_EQ(first.status, 503);
  EXPECT_NE(first.body.find("attic did not answer"), std::string::npos) << first.body;
  const auto second = Send("POST", alpha_->url() + "/v2/models/b/infer", kInferBody);
  EXPECT_EQ(second.status, 503);
  EXPECT_NE(second.body.find("failed to answer lately"), std::string::npos) << second.body;
}

TEST_F(ForwardingTest, RestPeerRefusingThePeerTokenIs502) {
  // gamma presents a peer token that is not the location's.
  Agent gamma(root_, "gamma", "c", 3, kClientToken, "not-the-peer-token");
  gamma.peers().Replace("static", {beta_->self()});
  http::ClientRequest request;
  request.url = gamma.url() + "/v2/models/b";
  request.headers.Set("Authorization", std::string("Bearer ") + kClientToken);
  const auto answer = client_->Send(request).value();
  EXPECT_EQ(answer.status, 502);
  EXPECT_NE(answer.body.find("refused this agent's peer token"), std::string::npos) << answer.body;
}

TEST_F(ForwardingTest, RepositoryIndexListsTheLocationOnRequest) {
  // The index is behind the management token, unset here.
  const auto local =
      nlohmann::json::parse(Send("POST", alpha_->url() + "/v2/repository/index").body);
  ASSERT_EQ(local.size(), 1U);
  EXPECT_FALSE(local[0].contains("device"));
  const auto location = nlohmann::json::parse(
      Send("POST", alpha_->url() + "/v2/repository/index", R"({"location": true})").body);
  ASSERT_EQ(location.size(), 2U) << location.dump();
  EXPECT_EQ(location[0]["name"], "a");
  EXPECT_EQ(location[0]["device"], "alpha");
  EXPECT_EQ(location[1]["name"], "b");
  EXPECT_EQ(location[1]["device"], "beta");
  EXPECT_EQ(location[1]["state"], "READY");
  const auto bad = Send("POST", alpha_->url() + "/v2/repository/index", R"({"location": 1})");
  EXPECT_EQ(bad.status, 400);
}

TEST_F(ForwardingTest, GrpcInferMetadataAndReadyAreForwarded) {
  auto stub = StubTo(*alpha_);
  {
    grpc::ClientContext context;
    Authorize(context);
    inference::ModelInferResponse response;
    const auto status = stub->ModelInfer(&context, InferRequest("b"), &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(DeviceOf(context), "beta");
    ASSERT_EQ(response.outputs_size(), 1);
    EXPECT_EQ(response.outputs(0).contents().fp32_contents(0), 3.5F);
  }
  {
    grpc::ClientContext context;
    Authorize(context);
    inference::ModelInferResponse response;
    ASSERT_TRUE(stub->ModelInfer(&context, InferRequest("a"), &response).ok());
    EXPECT_EQ(DeviceOf(context), "alpha");
  }
  {
    grpc::ClientContext context;
    Authorize(context);
    inference::ModelMetadataRequest request;
    request.set_name("b");
    inference::ModelMetadataResponse response;
    ASSERT_TRUE(stub->ModelMetadata(&context, request, &response).ok());
    EXPECT_EQ(response.name(), "b");
    EXPECT_EQ(DeviceOf(context), "beta");
  }
  {
    grpc::ClientContext context;
    Authorize(context);
    inference::ModelReadyRequest request;
    request.set_name("b");
    inference::ModelReadyResponse response;
    ASSERT_TRUE(stub->ModelReady(&context, request, &response).ok());
    EXPECT_TRUE(response.ready());
    EXPECT_EQ(DeviceOf(context), "beta");
  }
}

TEST_F(ForwardingTest, GrpcHopMetadataAndUnknownModelsAreAnsweredLocally) {
  auto stub = StubTo(*alpha_);
  {
    grpc::ClientContext context;
    Authorize(context);
    context.AddMetadata("perch-forwarded-by", "someone");
    inference::ModelInferResponse response;
    const auto status = stub->ModelInfer(&context, InferRequest("b"), &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_EQ(DeviceOf(context), "alpha");
    EXPECT_EQ(beta_->runs().started(), 0);
  }
  {
    grpc::ClientContext context;
    Authorize(context);
    inference::ModelInferResponse response;
    const auto status = stub->ModelInfer(&context, InferRequest("nope"), &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_NE(status.error_message().find("no agent of this location serves model 'nope'"),
              std::string::npos)
        << status.error_message();
  }
}

TEST_F(ForwardingTest, GrpcPeerThatCannotBeReachedIsSkippedForTheNextOne) {
  Peer dead{.device = "attic",
            .url = "http://127.0.0.1:" + std::to_string(ClosedPort()),
            .grpc_address = "127.0.0.1:" + std::to_string(ClosedPort()),
            .models = {"b"},
            .blobs = {}};
  alpha_->peers().Replace("static", {dead, beta_->self()});
  auto stub = StubTo(*alpha_);
  grpc::ClientContext context;
  Authorize(context);
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  inference::ModelInferResponse response;
  const auto status = stub->ModelInfer(&context, InferRequest("b"), &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(DeviceOf(context), "beta");
}

TEST_F(ForwardingTest, GrpcPeerRefusingThePeerTokenIsUnavailable) {
  Agent gamma(root_, "gamma", "c", 3, kClientToken, "not-the-peer-token");
  gamma.peers().Replace("static", {beta_->self()});
  auto stub = StubTo(gamma);
  grpc::ClientContext context;
  Authorize(context);
  inference::ModelInferResponse response;
  const auto status = stub->ModelInfer(&context, InferRequest("b"), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(status.error_message().find("refused this agent's peer token"), std::string::npos)
      << status.error_message();
  EXPECT_EQ(beta_->runs().started(), 0);
}

TEST_F(ForwardingTest, GrpcClientDeadlineCarriesOverToThePeer) {
  beta_->runs().Hold();
  auto stub = StubTo(*alpha_);
  grpc::ClientContext context;
  Authorize(context);
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(300));
  inference::ModelInferResponse response;
  const auto status = stub->ModelInfer(&context, InferRequest("b"), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << status.error_message();
  beta_->runs().Release();
  // The client's deadline passing is not beta's fault: beta is not avoided.
  const auto lease = alpha_->peers().Acquire("b");
  ASSERT_TRUE(lease.has_value());
  EXPECT_EQ(lease->peer().device, "beta");
}

}  // namespace
}  // namespace perch
