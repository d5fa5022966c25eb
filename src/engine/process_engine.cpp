#include "engine/process_engine.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>

#include "engine/oip_client_codec.h"
#include "engine/process_supervisor.h"
#include "engine/server_connection.h"

namespace perch {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr size_t kMaxAnswerBytes = 256 << 20;

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

  bool WaitsOnAnotherProcess() const override { return true; }

  Result<std::vector<Tensor>> Run(const std::vector<Tensor>& inputs,
                                  const std::vector<std::string>& output_names) override {
    return RunWithContext(inputs, output_names, RunContext{});
  }

  // A request waits for a restarting server until its own deadline (then
  // DeadlineExceeded, as any request past its timeout), or, when it has
  // none, for runtime.request_timeout_ms (then Unavailable: 503). The
  // server gets the request's parameters.
  Result<std::vector<Tensor>> RunWithContext(const std::vector<Tensor>& inputs,
                                             const std::vector<std::string>& output_names,
                                             const RunContext& context) override {
    const std::optional<Clock::time_point>& request_deadline = context.deadline;
    const auto deadline =
        request_deadline.value_or(Clock::now() + milliseconds(spec_.request_timeout_ms));
    PERCH_ASSIGN_OR_RETURN(const std::string body,
                           EncodeOipInferRequest(inputs, output_names, context.parameters));
    // A server that died under a request is restarted: the request waits
    // for the new one (within its deadline) and is sent again.
    uint64_t failed_generation = 0;
    for (;;) {
      auto ready = supervisor_->WaitReady(deadline, failed_generation);
      if (!ready.ok() && request_deadline && Clock::now() >= *request_deadline) {
        return Status(StatusCode::kDeadlineExceeded,
                      fmt::format("{}; the request's timeout passed", ready.status().message()));
      }
      PERCH_ASSIGN_OR_RETURN(const ServerAddress address, std::move(ready));
      // A kept-alive connection the server closed meanwhile (an idle
      // timeout) fails at once: that is tried again on a new connection
      // before the server is taken for dead.
      Result<ServerAnswer> answer = Unavailable("not sent");
      for (bool fresh = false; !fresh;) {
        auto connection = TakeConnection(address, fresh);
        if (!connection.ok()) {
          answer = connection.status();
          break;
        }
        answer = (*connection)->Post(infer_path_, body, deadline, kMaxAnswerBytes);
        if (answer.ok() || answer.status().code() != StatusCode::kUnavailable) {
          GiveBack(std::move(connection).value(), address);
          break;
        }
      }
      if (answer.ok()) {
        return Interpret(*answer, output_names);
      }
      if (answer.status().code() == StatusCode::kResourceExhausted) {
        return BadGateway(fmt::format("model '{}': {}", model_name_, answer.status().message()));
      }
      if (Clock::now() >= deadline) {
        return Status(request_deadline ? StatusCode::kDeadlineExceeded : StatusCode::kUnavailable,
                      fmt::format("model '{}': its server did not answer: {}", model_name_,
                                  answer.status().message()));
      }
      failed_generation = address.generation;
    }
  }

 private:
  Result<std::vector<Tensor>> Interpret(const ServerAnswer& answer,
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

  // One connection per concurrent request; idle ones are kept open for
  // the next. `fresh` says whether the one returned was just opened.
  Result<std::unique_ptr<ServerConnection>> TakeConnection(const ServerAddress& address,
                                                           bool& fresh) {
    {
      std::lock_guard lock(mutex_);
      if (address.generation == pool_generation_ && !idle_.empty()) {
        auto connection = std::move(idle_.back());
        idle_.pop_back();
        return connection;
      }
    }
    fresh = true;
    return ServerConnection::Open(address.port, address.unix_socket, milliseconds(2000));
  }

  void GiveBack(std::unique_ptr<ServerConnection> connection, const ServerAddress& address) {
    std::lock_guard lock(mutex_);
    if (address.generation != pool_generation_) {
      idle_.clear();  // connections to a server that is gone
      pool_generation_ = address.generation;
    }
    if (connection->reusable() && idle_.size() < 64) {
      idle_.push_back(std::move(connection));
    }
  }

  const std::unique_ptr<ProcessSupervisor> supervisor_;
  const RuntimeSpec spec_;
  const std::string model_name_;
  const std::string infer_path_;
  std::mutex mutex_;
  uint64_t pool_generation_ = 0;                         // guarded by mutex_
  std::vector<std::unique_ptr<ServerConnection>> idle_;  // guarded by mutex_
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
