// `perch perf`: a load generator in the spirit of Triton's perf_analyzer.
// For each concurrency level it keeps that many requests in flight for a
// fixed time and reports throughput and latency percentiles.
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cli/commands.h"
#include "cli/registry_flags.h"
#include "core/status.h"
#include "http/client.h"
#include "tensor/json_codec.h"
#include "tensor/tensor.h"

#ifdef PERCH_WITH_GRPC
#include <grpcpp/grpcpp.h>

#include "grpc_predict_v2.grpc.pb.h"
#endif

namespace perch::cli {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

struct PerfOptions {
  std::string model;
  std::string version;
  std::string protocol = "rest";
  std::string url = "http://127.0.0.1:8000";
  std::string grpc_target = "127.0.0.1:8001";
  std::vector<int> concurrency{1};
  std::string duration = "10s";
  std::string warmup = "2s";
  std::string input_data;
  std::string ca_file;
  std::string api_token;
  bool binary = false;
  bool csv = false;
  bool json_output = false;
};

struct LevelResult {
  int concurrency = 0;
  size_t requests = 0;
  size_t errors = 0;
  double seconds = 0;
  std::vector<double> latencies_ms;  // sorted
  std::string first_error;

  double Throughput() const { return seconds > 0 ? static_cast<double>(requests) / seconds : 0; }
  double Percentile(double p) const {
    if (latencies_ms.empty()) {
      return 0;
    }
    const auto rank =
        static_cast<size_t>(std::lround(p / 100.0 * static_cast<double>(latencies_ms.size() - 1)));
    return latencies_ms[std::min(rank, latencies_ms.size() - 1)];
  }
};

Result<std::chrono::milliseconds> ParseDuration(const std::string& text) {
  size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  const std::string unit = text.substr(used);
  const double scale = unit == "ms"                  ? 1
                       : unit == "s" || unit.empty() ? 1000
                       : unit == "m"                 ? 60000
                                                     : -1;
  if (used == 0 || scale < 0 || value < 0) {
    return InvalidArgument(fmt::format("'{}' is not a duration such as 500ms, 10s or 2m", text));
  }
  return std::chrono::milliseconds(static_cast<int64_t>(value * scale));
}

// One connection's worth of sending the same request again and again.
class Sender {
 public:
  virtual ~Sender() = default;
  // Sends one request; the error text when it failed.
  virtual std::optional<std::string> Send() = 0;
};

// The REST address without a trailing '/'.
std::string RestBase(const PerfOptions& options) {
  std::string base = options.url;
  while (base.ends_with('/')) {
    base.pop_back();
  }
  return base;
}

std::string ModelUrl(const PerfOptions& options) {
  return RestBase(options) + "/v2/models/" + options.model +
         (options.version.empty() ? "" : "/versions/" + options.version);
}

Result<std::unique_ptr<http::Client>> MakeHttpClient(const PerfOptions& options) {
  return http::Client::Create(http::ClientOptions{.ca_file = options.ca_file});
}

void SetApiToken(const PerfOptions& options, http::Headers& headers) {
  if (!options.api_token.empty()) {
    headers.Set("Authorization", "Bearer " + options.api_token);
  }
}

class RestSender final : public Sender {
 public:
  // Each sender has its own client, so its own kept-alive connection.
  static Result<std::unique_ptr<Sender>> Create(const PerfOptions& options, const std::string& body,
                                                size_t json_size) {
    PERCH_ASSIGN_OR_RETURN(auto client, MakeHttpClient(options));
    http::ClientRequest request;
    request.method = "POST";
    request.url = ModelUrl(options) + "/infer";
    request.body = body;
    request.headers.Set("Content-Type", "application/json");
    SetApiToken(options, request.headers);
    if (json_size != body.size()) {
      request.headers.Set("Inference-Header-Content-Length", std::to_string(json_size));
      request.headers.Set("Content-Type", "application/octet-stream");
    }
    return std::unique_ptr<Sender>(new RestSender(std::move(client), std::move(request)));
  }

  std::optional<std::string> Send() override {
    const auto result = client_->Send(request_);
    if (!result.ok()) {
      return result.status().message();
    }
    if (result->status != 200) {
      return fmt::format("HTTP {}: {}", result->status, result->body.substr(0, 300));
    }
    return std::nullopt;
  }

 private:
  RestSender(std::unique_ptr<http::Client> client, http::ClientRequest request)
      : client_(std::move(client)), request_(std::move(request)) {}

  const std::unique_ptr<http::Client> client_;
  const http::ClientRequest request_;
};

#ifdef PERCH_WITH_GRPC
class GrpcSender final : public Sender {
 public:
  GrpcSender(const std::string& target, const inference::ModelInferRequest& request,
             std::string api_token)
      : request_(request), api_token_(std::move(api_token)) {
    grpc::ChannelArguments arguments;
    arguments.SetMaxReceiveMessageSize(-1);
    arguments.SetMaxSendMessageSize(-1);
    // A channel per sender: concurrent senders must not share one connection.
    arguments.SetInt("perch.sender", next_id_++);
    stub_ = inference::GRPCInferenceService::NewStub(
        grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), arguments));
  }

  std::optional<std::string> Send() override {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    if (!api_token_.empty()) {
      context.AddMetadata("authorization", "Bearer " + api_token_);
    }
    inference::ModelInferResponse response;
    const auto status = stub_->ModelInfer(&context, request_, &response);
    if (!status.ok()) {
      return fmt::format("gRPC {}: {}", static_cast<int>(status.error_code()),
                         status.error_message());
    }
    return std::nullopt;
  }

 private:
  static inline std::atomic<int> next_id_{0};
  std::unique_ptr<inference::GRPCInferenceService::Stub> stub_;
  const inference::ModelInferRequest& request_;
  const std::string api_token_;
};
#endif

// Random inputs shaped after the model's metadata; dynamic dims become 1.
Result<std::string> RandomRequest(const json& metadata) {
  std::mt19937 random(42);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  json request = {{"inputs", json::array()}};
  for (const auto& input : metadata.value("inputs", json::array())) {
    Shape shape;
    for (const auto& dim : input.value("shape", json::array())) {
      shape.push_back(std::max<int64_t>(dim.get<int64_t>(), 1));
    }
    PERCH_ASSIGN_OR_RETURN(const int64_t count, ElementCount(shape));
    const std::string datatype = input.value("datatype", "FP32");
    json data = json::array();
    for (int64_t i = 0; i < count; ++i) {
      if (datatype == "BOOL") {
        data.push_back(uniform(random) < 0.5);
      } else if (datatype == "BYTES") {
        data.push_back("perch");
      } else if (datatype.starts_with("FP") || datatype == "BF16") {
        data.push_back(uniform(random));
      } else {
        data.push_back(static_cast<int>(uniform(random) * 10));
      }
    }
    request["inputs"].push_back(
        {{"name", input["name"]}, {"datatype", datatype}, {"shape", shape}, {"data", data}});
  }
  return request.dump();
}

Result<std::string> FetchMetadata(const PerfOptions& options) {
  if (options.protocol == "rest") {
    PERCH_ASSIGN_OR_RETURN(auto client, MakeHttpClient(options));
    http::ClientRequest request;
    request.url = ModelUrl(options);
    SetApiToken(options, request.headers);
    const auto result = client->Send(request);
    if (!result.ok() || result->status != 200) {
      return Unavailable(fmt::format("cannot read the metadata of model '{}' from {}: {}",
                                     options.model, options.url,
                                     result.ok() ? result->body : result.status().message()));
    }
    return result->body;
  }
#ifdef PERCH_WITH_GRPC
  auto stub = inference::GRPCInferenceService::NewStub(
      grpc::CreateChannel(options.grpc_target, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  if (!options.api_token.empty()) {
    context.AddMetadata("authorization", "Bearer " + options.api_token);
  }
  inference::ModelMetadataRequest request;
  request.set_name(options.model);
  request.set_version(options.version);
  inference::ModelMetadataResponse response;
  const auto status = stub->ModelMetadata(&context, request, &response);
  if (!status.ok()) {
    return Unavailable(fmt::format("cannot read the metadata of model '{}' from {}: {}",
                                   options.model, options.grpc_target, status.error_message()));
  }
  json metadata = {{"inputs", json::array()}};
  for (const auto& input : response.inputs()) {
    metadata["inputs"].push_back(
        {{"name", input.name()},
         {"datatype", input.datatype()},
         {"shape", std::vector<int64_t>(input.shape().begin(), input.shape().end())}});
  }
  return metadata.dump();
#else
  return InvalidArgument("this perch was built without gRPC");
#endif
}

LevelResult RunLevel(const std::vector<std::unique_ptr<Sender>>& senders,
                     std::chrono::milliseconds warmup, std::chrono::milliseconds duration) {
  LevelResult result;
  result.concurrency = static_cast<int>(senders.size());
  const auto start = Clock::now();
  const auto measure_from = start + warmup;
  const auto end = measure_from + duration;
  std::vector<std::vector<double>> latencies(senders.size());
  std::vector<size_t> errors(senders.size());
  std::vector<std::string> first_errors(senders.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < senders.size(); ++i) {
    threads.emplace_back([&, i] {
      while (true) {
        const auto sent = Clock::now();
        if (sent >= end) {
          return;
        }
        const auto error = senders[i]->Send();
        const auto received = Clock::now();
        if (sent < measure_from) {
          continue;
        }
        if (error) {
          ++errors[i];
          if (first_errors[i].empty()) {
            first_errors[i] = *error;
          }
        } else {
          latencies[i].push_back(
              std::chrono::duration<double, std::milli>(received - sent).count());
        }
      }
    });
  }
  for (auto& thread : threads) {
    thread.join();
  }
  result.seconds = std::chrono::duration<double>(Clock::now() - measure_from).count();
  for (size_t i = 0; i < senders.size(); ++i) {
    result.latencies_ms.insert(result.latencies_ms.end(), latencies[i].begin(), latencies[i].end());
    result.errors += errors[i];
    if (result.first_error.empty()) {
      result.first_error = first_errors[i];
    }
  }
  std::sort(result.latencies_ms.begin(), result.latencies_ms.end());
  result.requests = result.latencies_ms.size();
  return result;
}

void Print(const PerfOptions& options, const std::vector<LevelResult>& results) {
  if (options.json_output) {
    json out = json::array();
    for (const auto& r : results) {
      out.push_back({{"concurrency", r.concurrency},
                     {"requests", r.requests},
                     {"errors", r.errors},
                     {"throughput", r.Throughput()},
                     {"p50_ms", r.Percentile(50)},
                     {"p90_ms", r.Percentile(90)},
                     {"p99_ms", r.Percentile(99)}});
    }
    std::printf("%s\n", out.dump(2).c_str());
    return;
  }
  if (options.csv) {
    std::printf("concurrency,requests,errors,throughput,p50_ms,p90_ms,p99_ms\n");
    for (const auto& r : results) {
      std::printf("%d,%zu,%zu,%.2f,%.3f,%.3f,%.3f\n", r.concurrency, r.requests, r.errors,
                  r.Throughput(), r.Percentile(50), r.Percentile(90), r.Percentile(99));
    }
    return;
  }
  std::printf("%-12s %10s %8s %14s %10s %10s %10s\n", "concurrency", "requests", "errors",
              "infer/s", "p50 ms", "p90 ms", "p99 ms");
  for (const auto& r : results) {
    std::printf("%-12d %10zu %8zu %14.1f %10.3f %10.3f %10.3f\n", r.concurrency, r.requests,
                r.errors, r.Throughput(), r.Percentile(50), r.Percentile(90), r.Percentile(99));
  }
  for (const auto& r : results) {
    if (!r.first_error.empty()) {
      std::fprintf(stderr, "concurrency %d: first error: %s\n", r.concurrency,
                   r.first_error.c_str());
    }
  }
}

Result<std::vector<LevelResult>> Run(const PerfOptions& options) {
  PERCH_ASSIGN_OR_RETURN(const auto duration, ParseDuration(options.duration));
  PERCH_ASSIGN_OR_RETURN(const auto warmup, ParseDuration(options.warmup));
  std::string request_json;
  if (!options.input_data.empty()) {
    std::ifstream in(options.input_data);
    if (!in) {
      return NotFound(fmt::format("cannot open --input-data {}", options.input_data));
    }
    request_json.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  } else {
    PERCH_ASSIGN_OR_RETURN(const std::string metadata_text, FetchMetadata(options));
    const json metadata = json::parse(metadata_text, nullptr, false);
    if (!metadata.is_object()) {
      return Unavailable(fmt::format("the metadata of model '{}' from {} is not a JSON object",
                                     options.model, options.url));
    }
    PERCH_ASSIGN_OR_RETURN(request_json, RandomRequest(metadata));
  }
  // Decoding through perch's own codec checks the data and gives raw bytes.
  auto decoded = DecodeJsonInferRequest(request_json, "", 64);
  if (!decoded.ok()) {
    return InvalidArgument(
        fmt::format("the request data is unusable: {}", decoded.status().message()));
  }

  std::string rest_body = request_json;
  size_t json_size = rest_body.size();
  if (options.binary) {
    json header = {{"inputs", json::array()}};
    std::string raw;
    for (const auto& tensor : decoded->request.inputs) {
      header["inputs"].push_back({{"name", tensor.name},
                                  {"datatype", ToString(tensor.datatype)},
                                  {"shape", tensor.shape},
                                  {"parameters", {{"binary_data_size", tensor.data.size()}}}});
      raw += tensor.data;
    }
    header["parameters"] = {{"binary_data_output", true}};
    rest_body = header.dump();
    json_size = rest_body.size();
    rest_body += raw;
  }
#ifdef PERCH_WITH_GRPC
  inference::ModelInferRequest grpc_request;
  grpc_request.set_model_name(options.model);
  grpc_request.set_model_version(options.version);
  for (const auto& tensor : decoded->request.inputs) {
    auto* input = grpc_request.add_inputs();
    input->set_name(tensor.name);
    input->set_datatype(std::string(ToString(tensor.datatype)));
    for (const int64_t dim : tensor.shape) {
      input->add_shape(dim);
    }
    grpc_request.add_raw_input_contents(tensor.data);
  }
#endif

  std::vector<LevelResult> results;
  for (const int concurrency : options.concurrency) {
    std::vector<std::unique_ptr<Sender>> senders;
    for (int i = 0; i < concurrency; ++i) {
#ifdef PERCH_WITH_GRPC
      if (options.protocol == "grpc") {
        senders.push_back(
            std::make_unique<GrpcSender>(options.grpc_target, grpc_request, options.api_token));
        continue;
      }
#endif
      PERCH_ASSIGN_OR_RETURN(auto sender, RestSender::Create(options, rest_body, json_size));
      senders.push_back(std::move(sender));
    }
    if (!options.json_output && !options.csv) {
      std::fprintf(stderr, "measuring concurrency %d for %s...\n", concurrency,
                   options.duration.c_str());
    }
    results.push_back(RunLevel(senders, warmup, duration));
  }
  return results;
}

}  // namespace

CommandRunner AddPerfCommand(CLI::App& app) {
  auto options = std::make_shared<PerfOptions>();
  app.add_option("model", options->model, "Model name")->required();
  app.add_option("--model-version", options->version, "Model version (default: the newest)");
  app.add_option("--protocol", options->protocol, "rest or grpc")
      ->check(CLI::IsMember({"rest", "grpc"}))
      ->capture_default_str();
  app.add_option("--url", options->url, "REST address")
      ->envname("PERCH_URL")
      ->capture_default_str();
  AddCaFileFlag(app, options->ca_file);
  AddApiTokenFlag(app, options->api_token);
  app.add_option("--grpc-target", options->grpc_target, "gRPC address")->capture_default_str();
  app.add_option("--concurrency", options->concurrency, "Requests kept in flight, e.g. 1,2,4,8")
      ->delimiter(',')
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  app.add_option("--duration", options->duration, "Measuring time per level (500ms, 10s, 2m)")
      ->capture_default_str();
  app.add_option("--warmup", options->warmup, "Unmeasured time before each level")
      ->capture_default_str();
  app.add_option("--input-data", options->input_data,
                 "An infer request body (JSON) to send; default: random data shaped after the "
                 "model's metadata");
  app.add_flag("--binary", options->binary, "REST: send and receive binary tensors");
  app.add_flag("--csv", options->csv, "Print CSV");
  app.add_flag("--json", options->json_output, "Print JSON");
  return [options] {
    const auto results = Run(*options);
    if (!results.ok()) {
      std::fprintf(stderr, "perch perf: %s\n", results.status().message().c_str());
      return 1;
    }
    Print(*options, *results);
    const bool all_failed = std::all_of(results->begin(), results->end(),
                                        [](const LevelResult& r) { return r.requests == 0; });
    return all_failed ? 1 : 0;
  };
}

}  // namespace perch::cli
