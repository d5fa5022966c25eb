// Runs one model's own server and keeps it running: starts it (sandboxed,
// see process_command.h), waits for GET /v2/health/ready, reads its
// metadata, restarts it with backoff when it exits, and stops it with the
// supervisor. Its output goes to perch's log, each line tagged with the
// model's name and version.
//
// The server dies with perch even when perch is killed with SIGKILL: the
// child asks the kernel for SIGKILL when the thread that forked it ends
// (PR_SET_PDEATHSIG), every fork happens on the supervisor's own thread,
// which lives exactly as long as the supervisor, and bubblewrap's
// --die-with-parent and its PID namespace take the sandboxed server and
// anything it started down with bubblewrap.
//
// Threading: one internal thread forks, watches and restarts; WaitReady
// and the accessors are thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "core/log.h"
#include "core/status.h"
#include "engine/engine.h"
#include "engine/runtime_spec.h"

namespace perch {

struct SupervisorOptions {
  RuntimeSpec spec;
  std::filesystem::path version_folder;
  std::string model_name;
  int64_t version = 0;
  std::filesystem::path bwrap;  // empty: bubblewrap is not installed
  Logger logger;
};

// Where a ready server answers.
struct ServerAddress {
  std::string base_url;     // http://127.0.0.1:PORT, or http://localhost for a socket
  int port = 0;             // on 127.0.0.1, for TCP
  std::string unix_socket;  // empty for TCP
  uint64_t generation = 0;  // counts the starts that became ready: 1, 2, ...
};

class ProcessSupervisor {
 public:
  // Starts the server and returns once it is ready and its metadata read.
  // Unavailable with the reason (its exit status, the last lines it wrote,
  // or the readiness timeout) when it never gets there; nothing is left
  // running then. InvalidArgument when the sandbox cannot be set up.
  static Result<std::unique_ptr<ProcessSupervisor>> Start(SupervisorOptions options);
  ~ProcessSupervisor();  // stops the server: SIGTERM, then SIGKILL after 2 s
  ProcessSupervisor(const ProcessSupervisor&) = delete;
  ProcessSupervisor& operator=(const ProcessSupervisor&) = delete;

  // The signature the server's metadata declared on the first start.
  const ModelSignature& signature() const;

  // The address of the ready server; waits through a restart until
  // `deadline`, then Unavailable saying the server is restarting. With
  // `after` set, waits for a server newer than that generation: the one a
  // request failed on is gone even if the supervisor has not noticed yet.
  Result<ServerAddress> WaitReady(std::chrono::steady_clock::time_point deadline,
                                  uint64_t after = 0) const;

  class Impl;

 private:
  explicit ProcessSupervisor(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace perch
