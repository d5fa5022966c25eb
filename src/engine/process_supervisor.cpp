#include "engine/process_supervisor.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <stop_token>
#include <thread>

#include "engine/oip_client_codec.h"
#include "engine/process_command.h"
#include "http/client.h"

namespace perch {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr size_t kTailLines = 12;
constexpr milliseconds kStopGrace{2000};
constexpr milliseconds kMaxBackoff{5000};
// A server that stayed up this long starts its backoff afresh.
constexpr std::chrono::seconds kStableRun{30};

// A free loopback port: the kernel picks it, the server binds it next.
Result<int> FreeLoopbackPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return Unavailable("cannot open a socket to find a free port");
  }
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0;
  ::close(fd);
  if (!ok) {
    return Unavailable("cannot bind a loopback port for the model's server");
  }
  return static_cast<int>(ntohs(address.sin_port));
}

// A name on PATH to the file it runs, as execvp would find it.
std::string ResolveProgram(const std::string& program, const std::string& path) {
  if (program.find('/') != std::string::npos) {
    return program;
  }
  size_t start = 0;
  while (start <= path.size()) {
    const size_t end = std::min(path.find(':', start), path.size());
    const fs::path candidate = fs::path(path.substr(start, end - start)) / program;
    if (::access(candidate.c_str(), X_OK) == 0) {
      return candidate.string();
    }
    start = end + 1;
  }
  return program;
}

std::string DescribeExit(int wait_status) {
  if (WIFEXITED(wait_status)) {
    return fmt::format("exited with status {}", WEXITSTATUS(wait_status));
  }
  if (WIFSIGNALED(wait_status)) {
    return fmt::format("was killed by signal {}", WTERMSIG(wait_status));
  }
  return "stopped";
}

struct Child {
  pid_t pid = -1;
  int output = -1;  // its stdout and stderr, read end
};

}  // namespace

class ProcessSupervisor::Impl {
 public:
  explicit Impl(SupervisorOptions options) : options_(std::move(options)) {
    options_.logger = options_.logger.ForComponent("runtime");
    tag_ = fmt::format("{}:{}", options_.model_name, options_.version);
  }

  ~Impl() {
    thread_.request_stop();
    wakeup_.notify_all();
    if (thread_.joinable()) {
      thread_.join();
    }
    if (!socket_folder_.empty()) {
      std::error_code error;
      fs::remove_all(socket_folder_, error);
    }
  }

  Status Begin() {
    if (options_.spec.listen == RuntimeListen::kUnix) {
      std::string pattern = (fs::temp_directory_path() / "perch-model-XXXXXX").string();
      if (::mkdtemp(pattern.data()) == nullptr) {
        return Unavailable("cannot create a folder for the model's socket");
      }
      socket_folder_ = pattern;
      ::chmod(socket_folder_.c_str(), 0777);  // the sandbox may run as another user
    }
    if (options_.spec.kind == RuntimeKind::kProcess && !options_.spec.sandbox) {
      options_.logger.Warn(
          "model '{}' version {} runs WITHOUT a sandbox: its model.json says "
          "\"sandbox\": false",
          options_.model_name, options_.version);
    }
    thread_ = std::jthread([this](const std::stop_token& stop) { Loop(stop); });
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return state_ != State::kStarting; });
    if (state_ == State::kFailed) {
      return Unavailable(failure_);
    }
    return Status::Ok();
  }

  Result<ServerAddress> WaitReady(Clock::time_point deadline, uint64_t after) const {
    std::unique_lock lock(mutex_);
    const auto settled = [&] {
      return state_ == State::kStopped || state_ == State::kFailed ||
             (state_ == State::kReady && address_.generation > after);
    };
    changed_.wait_until(lock, deadline, settled);
    if (state_ == State::kReady && address_.generation > after) {
      return address_;
    }
    return Unavailable(fmt::format("model '{}' is not ready: its server is restarting ({})",
                                   options_.model_name, failure_));
  }

  const ModelSignature& signature() const { return signature_; }

 private:
  enum class State { kStarting, kReady, kRestarting, kFailed, kStopped };

  void SetState(State state, std::string reason = {}) {
    {
      std::lock_guard lock(mutex_);
      state_ = state;
      if (!reason.empty()) {
        failure_ = std::move(reason);
      }
    }
    changed_.notify_all();
  }

  void Loop(const std::stop_token& stop) {
    int failures = 0;
    bool first = true;
    while (!stop.stop_requested()) {
      const auto started = Clock::now();
      Status outcome = RunOnce(stop, first);
      if (stop.stop_requested()) {
        break;
      }
      if (first && !reached_ready_) {
        SetState(State::kFailed, outcome.message());
        return;
      }
      first = false;
      if (Clock::now() - started > kStableRun) {
        failures = 0;
      }
      const milliseconds delay =
          std::min(kMaxBackoff, milliseconds(100) * (1 << std::min(failures, 10)));
      ++failures;
      SetState(State::kRestarting, outcome.message());
      options_.logger.Error("model '{}' version {}: {}; restarting it in {} ms",
                            options_.model_name, options_.version, outcome.message(),
                            delay.count());
      std::unique_lock lock(wait_mutex_);
      wakeup_.wait_for(lock, stop, delay, [] { return false; });
    }
    SetState(State::kStopped, "the model is stopping");
  }

  // One life of the server: start, wait for ready, serve until it exits.
  // Returns why it ended.
  Status RunOnce(const std::stop_token& stop, bool first) {
    tail_.clear();
    auto launched = Launch();
    if (!launched.ok()) {
      return launched.status();
    }
    Child child = *launched;
    Status outcome = AwaitReady(child, stop, first);
    if (outcome.ok()) {
      outcome = Watch(child, stop);
    }
    Kill(child);
    return outcome;
  }

  Result<Child> Launch() {
    ProcessLaunch launch{.version_folder = options_.version_folder,
                         .model_name = options_.model_name,
                         .version = options_.version,
                         .port = 0,
                         .socket_path = {},
                         .bwrap = options_.bwrap};
    const RuntimeSpec& spec = options_.spec;
    if (spec.listen == RuntimeListen::kTcp) {
      PERCH_ASSIGN_OR_RETURN(launch.port, FreeLoopbackPort());
      std::lock_guard lock(mutex_);
      address_.base_url = fmt::format("http://127.0.0.1:{}", launch.port);
      address_.port = launch.port;
      address_.unix_socket.clear();
    } else {
      launch.socket_path = socket_folder_ / "server.sock";
      std::error_code error;
      fs::remove(launch.socket_path, error);
      std::lock_guard lock(mutex_);
      address_.base_url = "http://localhost";
      address_.unix_socket = launch.socket_path.string();
    }
    ProcessCommand command;
    if (spec.kind == RuntimeKind::kContainer) {
      command = BuildContainerCommand(spec, launch);
    } else {
      PERCH_ASSIGN_OR_RETURN(command, BuildProcessCommand(spec, launch));
    }
    // Everything the child needs is built before fork: after it, only
    // async-signal-safe calls.
    std::vector<std::string> env_strings;
    for (const auto& [key, value] : command.env) {
      env_strings.push_back(key + "=" + value);
    }
    const std::string program = ResolveProgram(command.argv[0], command.env["PATH"]);
    std::vector<char*> argv;
    for (auto& arg : command.argv) {
      argv.push_back(arg.data());
    }
    argv.push_back(nullptr);
    std::vector<char*> envp;
    for (auto& entry : env_strings) {
      envp.push_back(entry.data());
    }
    envp.push_back(nullptr);
    const bool limit_memory = spec.kind == RuntimeKind::kProcess && spec.memory_mb > 0;
    const rlimit memory{.rlim_cur = static_cast<rlim_t>(spec.memory_mb) << 20,
                        .rlim_max = static_cast<rlim_t>(spec.memory_mb) << 20};
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    bool limit_cpus = false;
    if (spec.kind == RuntimeKind::kProcess && spec.cpus > 0 &&
        ::sched_getaffinity(0, sizeof(cpus), &cpus) == 0) {
      int kept = 0;
      for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
        if (CPU_ISSET(cpu, &cpus) && kept++ >= spec.cpus) {
          CPU_CLR(cpu, &cpus);
        }
      }
      limit_cpus = true;
    }
    const std::string folder = options_.version_folder.string();
    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
      return Unavailable("cannot create a pipe for the model's output");
    }
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) {
      ::close(pipe_fds[0]);
      ::close(pipe_fds[1]);
      return Unavailable(fmt::format("cannot start the model's server: fork failed"));
    }
    if (pid == 0) {
      // The child: its own process group (so stopping it reaches whatever it
      // started), killed when the supervising thread ends.
      ::setpgid(0, 0);
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) {
        ::_exit(127);
      }
      sigset_t all;
      ::sigemptyset(&all);
      ::sigprocmask(SIG_SETMASK, &all, nullptr);
      ::signal(SIGPIPE, SIG_DFL);
      const int null = ::open("/dev/null", O_RDONLY);
      ::dup2(null, 0);
      ::dup2(pipe_fds[1], 1);
      ::dup2(pipe_fds[1], 2);
      ::close_range(3, ~0U, 0);
      if (limit_memory) {
        ::setrlimit(RLIMIT_AS, &memory);
      }
      if (limit_cpus) {
        ::sched_setaffinity(0, sizeof(cpus), &cpus);
      }
      if (::chdir(folder.c_str()) != 0) {
        ::_exit(126);
      }
      ::execve(program.c_str(), argv.data(), envp.data());
      const char message[] = "perch: cannot execute the model's command\n";
      (void)!::write(2, message, sizeof(message) - 1);
      ::_exit(127);
    }
    ::setpgid(pid, pid);  // also here: a stop right after fork must reach its group
    ::close(pipe_fds[1]);
    ::fcntl(pipe_fds[0], F_SETFL, ::fcntl(pipe_fds[0], F_GETFL) | O_NONBLOCK);
    options_.logger.Info("model '{}' version {}: started its server (pid {}{}): {}",
                         options_.model_name, options_.version, pid,
                         command.sandboxed ? ", sandboxed" : ", NOT sandboxed",
                         fmt::join(command.argv, " "));
    return Child{.pid = pid, .output = pipe_fds[0]};
  }

  // Moves what the server wrote into the log, line by line.
  void Drain(Child& child, milliseconds wait) {
    pollfd entry{.fd = child.output, .events = POLLIN, .revents = 0};
    if (child.output < 0 || ::poll(&entry, 1, static_cast<int>(wait.count())) <= 0) {
      if (child.output < 0) {
        std::this_thread::sleep_for(wait);
      }
      return;
    }
    char buffer[4096];
    for (;;) {
      const ssize_t got = ::read(child.output, buffer, sizeof(buffer));
      if (got == 0) {
        ::close(child.output);
        child.output = -1;
        break;
      }
      if (got < 0) {
        break;
      }
      pending_.append(buffer, static_cast<size_t>(got));
    }
    for (size_t end = pending_.find('\n'); end != std::string::npos; end = pending_.find('\n')) {
      EmitLine(pending_.substr(0, end));
      pending_.erase(0, end + 1);
    }
    if (pending_.size() > 8192 || (child.output < 0 && !pending_.empty())) {
      EmitLine(pending_);
      pending_.clear();
    }
  }

  void EmitLine(const std::string& line) {
    options_.logger.Info("[{}] {}", tag_, line);
    tail_.push_back(line);
    if (tail_.size() > kTailLines) {
      tail_.pop_front();
    }
  }

  std::string Tail() const {
    if (tail_.empty()) {
      return "it wrote nothing";
    }
    return fmt::format("its last lines: {}", fmt::join(tail_, " | "));
  }

  // Non-empty once the child has exited (and been reaped).
  std::optional<int> Exited(Child& child) {
    int status = 0;
    if (child.pid > 0 && ::waitpid(child.pid, &status, WNOHANG) == child.pid) {
      child.pid = -1;
      return status;
    }
    return std::nullopt;
  }

  Status AwaitReady(Child& child, const std::stop_token& stop, bool first) {
    auto client = http::Client::Create(http::ClientOptions{.connect_timeout = milliseconds(500),
                                                           .read_timeout = milliseconds(2000),
                                                           .user_agent = "perch",
                                                           .unix_socket = address_.unix_socket});
    if (!client.ok()) {
      return client.status();
    }
    const auto deadline = Clock::now() + milliseconds(options_.spec.ready_timeout_ms);
    const std::string served =
        options_.spec.served_name.empty() ? options_.model_name : options_.spec.served_name;
    while (!stop.stop_requested()) {
      if (const auto status = Exited(child)) {
        Drain(child, milliseconds(0));
        return Unavailable(
            fmt::format("its server {} before it was ready; {}", DescribeExit(*status), Tail()));
      }
      if (Clock::now() > deadline) {
        Drain(child, milliseconds(0));
        return Unavailable(
            fmt::format("its server did not answer GET /v2/health/ready with 200 within {} ms "
                        "(runtime.ready_timeout_ms); {}",
                        options_.spec.ready_timeout_ms, Tail()));
      }
      auto ready = (*client)->Send({.method = "GET",
                                    .url = address_.base_url + "/v2/health/ready",
                                    .headers = {},
                                    .body = {},
                                    .file = {},
                                    .on_head = {},
                                    .on_body = {},
                                    .max_body_bytes = 1 << 16,
                                    .follow_redirects = false,
                                    .progress = {}});
      if (ready.ok() && ready->status == 200) {
        break;
      }
      Drain(child, milliseconds(50));
    }
    if (stop.stop_requested()) {
      return Status(StatusCode::kCancelled, "stopping");
    }
    if (first) {
      auto metadata = (*client)->Send({.method = "GET",
                                       .url = address_.base_url + "/v2/models/" + served,
                                       .headers = {},
                                       .body = {},
                                       .file = {},
                                       .on_head = {},
                                       .on_body = {},
                                       .max_body_bytes = 1 << 20,
                                       .follow_redirects = false,
                                       .progress = {}});
      if (!metadata.ok() || metadata->status != 200) {
        return Unavailable(fmt::format("its server is ready but GET /v2/models/{} failed: {}",
                                       served,
                                       metadata.ok() ? fmt::format("HTTP {}", metadata->status)
                                                     : metadata.status().message()));
      }
      auto signature = DecodeOipModelMetadata(metadata->body);
      if (!signature.ok()) {
        return Unavailable(fmt::format("its server's GET /v2/models/{}: {}", served,
                                       signature.status().message()));
      }
      signature_ = std::move(signature).value();
    }
    options_.logger.Info("model '{}' version {}: its server is ready at {}", options_.model_name,
                         options_.version,
                         address_.unix_socket.empty() ? address_.base_url : address_.unix_socket);
    reached_ready_ = true;
    {
      std::lock_guard lock(mutex_);
      ++address_.generation;
    }
    SetState(State::kReady);
    return Status::Ok();
  }

  Status Watch(Child& child, const std::stop_token& stop) {
    while (!stop.stop_requested()) {
      if (const auto status = Exited(child)) {
        Drain(child, milliseconds(0));
        return Unavailable(fmt::format("its server {}", DescribeExit(*status)));
      }
      Drain(child, milliseconds(100));
    }
    return Status(StatusCode::kCancelled, "stopping");
  }

  void Kill(Child& child) {
    if (child.pid > 0) {
      ::kill(-child.pid, SIGTERM);
      const auto give_up = Clock::now() + kStopGrace;
      while (child.pid > 0 && Clock::now() < give_up) {
        if (Exited(child)) {
          break;
        }
        Drain(child, milliseconds(20));
      }
      if (child.pid > 0) {
        ::kill(-child.pid, SIGKILL);
        int status = 0;
        ::waitpid(child.pid, &status, 0);
        child.pid = -1;
      }
    }
    if (child.output >= 0) {
      Drain(child, milliseconds(0));
      if (child.output >= 0) {
        ::close(child.output);
        child.output = -1;
      }
    }
  }

  SupervisorOptions options_;
  std::string tag_;
  fs::path socket_folder_;
  // Owned by the supervising thread.
  std::string pending_;
  std::deque<std::string> tail_;
  bool reached_ready_ = false;
  // Written by the supervising thread before the first kReady, read-only after.
  ModelSignature signature_;

  mutable std::mutex mutex_;
  mutable std::condition_variable changed_;
  State state_ = State::kStarting;  // guarded by mutex_
  std::string failure_;             // guarded by mutex_
  ServerAddress address_;           // guarded by mutex_; read unlocked by the thread

  std::mutex wait_mutex_;
  std::condition_variable_any wakeup_;
  std::jthread thread_;
};

ProcessSupervisor::ProcessSupervisor(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ProcessSupervisor::~ProcessSupervisor() = default;

Result<std::unique_ptr<ProcessSupervisor>> ProcessSupervisor::Start(SupervisorOptions options) {
  auto impl = std::make_unique<Impl>(std::move(options));
  PERCH_RETURN_IF_ERROR(impl->Begin());
  return std::unique_ptr<ProcessSupervisor>(new ProcessSupervisor(std::move(impl)));
}

const ModelSignature& ProcessSupervisor::signature() const { return impl_->signature(); }

Result<ServerAddress> ProcessSupervisor::WaitReady(Clock::time_point deadline,
                                                   uint64_t after) const {
  return impl_->WaitReady(deadline, after);
}

}  // namespace perch
