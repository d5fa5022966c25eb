#include "engine/process_engine.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>

#include "engine/oip_client_codec.h"
#include "engine/process_supervisor.h"
#include "http/client.h"

namespace perch {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

class ProcessSession final : public Session {
 public:
  ProcessSession(std::unique_ptr<ProcessSupervisor> supervisor, RuntimeSpec spec,
                 std::string model_name)
      : supervisor_(std::move(supervisor)),
        spec_(std::move(spec)),
        model_name_(std::move(model_name)),
        infer_path_(fmt::format("/v2/models/{}/infer",
                                spec_.served_name.empty() ? model_name_ : spec_.served_name)) {}

  const ModelSignature& Signature() const override { return supervisor_->signature(); }

  Result<std::vector<Tensor>> Run(const std::vector<Tensor>& inputs,
                                  const std::vector<std::string>& output_names) override {
    const auto deadline = Clock::now() + milliseconds(spec_.request_timeout_ms);
    PERCH_ASSIGN_OR_RETURN(const std::string body, EncodeOipInferRequest(inputs, output_names));
    // A server that died under a request is restarted: the request waits
    // for the new one (within its deadline) and is sent again.
    uint64_t failed_generation = 0;
    for (;;) {
      PERCH_ASSIGN_OR_RETURN(const ServerAddress address,
                             supervisor_->WaitReady(deadline, failed_generation));
      PERCH_ASSIGN_OR_RETURN(auto client, TakeClient(address));
      http::ClientRequest request;
      request.method = "POST";
      request.url = address.base_url + infer_path_;
      request.headers.Set("Content-Type", "application/json");
      request.body = body;
      request.max_body_bytes = 256 << 20;
      auto answer = client->Send(request);
      if (answer.ok()) {
        GiveBack(std::move(client), address);
        return Interpret(*answer, output_names);
      }
      if (Clock::now() >= deadline) {
        return Unavailable(fmt::format("model '{}': its server did not answer: {}", model_name_,
                                       answer.status().message()));
      }
      failed_generation = address.generation;
    }
  }

 private:
  Result<std::vector<Tensor>> Interpret(const http::ClientResponse& answer,
                                        const std::vector<std::string>& output_names) const {
    if (answer.status >= 400 && answer.status < 500) {
      return InvalidArgument(fmt::format("model '{}' refused the request (HTTP {}): {}",
                                         model_name_, answer.status, Shorten(answer.body)));
    }
    if (answer.status != 200) {
      return BadGateway(fmt::format("model '{}': its server answered HTTP {}: {}", model_name_,
                                    answer.status, Shorten(answer.body)));
    }
    auto outputs = DecodeOipInferResponse(answer.body, output_names);
    if (!outputs.ok()) {
      return BadGateway(fmt::format("model '{}': its server's answer is unusable: {}", model_name_,
                                    outputs.status().message()));
    }
    return outputs;
  }

  static std::string Shorten(const std::string& text) {
    return text.size() > 300 ? text.substr(0, 300) + "..." : text;
  }

  // One HTTP client per concurrent request (a Client serves one thread at a
  // time); idle ones are kept for their open connections.
  Result<std::unique_ptr<http::Client>> TakeClient(const ServerAddress& address) {
    {
      std::lock_guard lock(mutex_);
      if (address.base_url == pool_address_ && !idle_.empty()) {
        auto client = std::move(idle_.back());
        idle_.pop_back();
        return client;
      }
    }
    return http::Client::Create(
        http::ClientOptions{.connect_timeout = milliseconds(2000),
                            .read_timeout = milliseconds(spec_.request_timeout_ms),
                            .user_agent = "perch",
                            .unix_socket = address.unix_socket});
  }

  void GiveBack(std::unique_ptr<http::Client> client, const ServerAddress& address) {
    std::lock_guard lock(mutex_);
    if (address.base_url != pool_address_) {
      idle_.clear();  // connections to a server that is gone
      pool_address_ = address.base_url;
    }
    if (idle_.size() < 64) {
      idle_.push_back(std::move(client));
    }
  }

  const std::unique_ptr<ProcessSupervisor> supervisor_;
  const RuntimeSpec spec_;
  const std::string model_name_;
  const std::string infer_path_;
  std::mutex mutex_;
  std::string pool_address_;                         // guarded by mutex_
  std::vector<std::unique_ptr<http::Client>> idle_;  // guarded by mutex_
};

class ProcessEngine final : public Engine {
 public:
  ProcessEngine(ProcessEngineOptions options, Logger logger)
      : options_(std::move(options)), logger_(std::move(logger)) {
    if (options_.bwrap.empty()) {
      for (const char* candidate : {"/usr/bin/bwrap", "/bin/bwrap"}) {
        if (::access(candidate, X_OK) == 0) {
          options_.bwrap = candidate;
          break;
        }
      }
    }
  }

  Result<std::unique_ptr<Session>> Load(const fs::path& model_file, const fs::path& allowed_root,
                                        const SessionOptions& options) override {
    if (!options.runtime) {
      return InvalidArgument("the process engine runs only models whose model.json has a runtime");
    }
    std::error_code error;
    const fs::path folder = fs::canonical(model_file, error);
    const fs::path root = fs::canonical(allowed_root, error);
    if (error || !fs::is_directory(folder)) {
      return NotFound(fmt::format("{} is not a version folder", model_file.string()));
    }
    const auto [end, ignored] = std::mismatch(root.begin(), root.end(), folder.begin());
    if (end != root.end()) {
      return Status(StatusCode::kPermissionDenied, fmt::format("{} lies outside the repository {}",
                                                               folder.string(), root.string()));
    }
    PERCH_ASSIGN_OR_RETURN(auto supervisor,
                           ProcessSupervisor::Start({.spec = *options.runtime,
                                                     .version_folder = folder,
                                                     .model_name = options.model_name,
                                                     .version = options.model_version,
                                                     .bwrap = options_.bwrap,
                                                     .logger = logger_}));
    return std::unique_ptr<Session>(
        new ProcessSession(std::move(supervisor), *options.runtime, options.model_name));
  }

 private:
  ProcessEngineOptions options_;
  const Logger logger_;
};

class DispatchEngine final : public Engine {
 public:
  DispatchEngine(std::unique_ptr<Engine> onnx, std::unique_ptr<Engine> process)
      : onnx_(std::move(onnx)), process_(std::move(process)) {}

  Result<std::unique_ptr<Session>> Load(const fs::path& model_file, const fs::path& allowed_root,
                                        const SessionOptions& options) override {
    return (options.runtime ? process_ : onnx_)->Load(model_file, allowed_root, options);
  }

 private:
  const std::unique_ptr<Engine> onnx_;
  const std::unique_ptr<Engine> process_;
};

}  // namespace

std::unique_ptr<Engine> CreateProcessEngine(ProcessEngineOptions options, Logger logger) {
  return std::make_unique<ProcessEngine>(std::move(options), std::move(logger));
}

std::unique_ptr<Engine> CreateRuntimeDispatchEngine(std::unique_ptr<Engine> onnx,
                                                    std::unique_ptr<Engine> process) {
  return std::make_unique<DispatchEngine>(std::move(onnx), std::move(process));
}

}  // namespace perch
