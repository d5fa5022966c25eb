// The `runtime` object of model.json: a model that is not ONNX but a server
// of its own (a Python script, an MLServer, a container image) which perch
// starts, supervises and talks the Open Inference Protocol to.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace perch {

enum class RuntimeKind { kProcess, kContainer };
std::string_view ToString(RuntimeKind kind);
std::optional<RuntimeKind> RuntimeKindFromString(std::string_view name);

// How perch reaches the server: a loopback TCP port, or a Unix socket (then
// the sandbox has no network at all).
enum class RuntimeListen { kTcp, kUnix };
std::string_view ToString(RuntimeListen listen);
std::optional<RuntimeListen> RuntimeListenFromString(std::string_view name);

struct RuntimeSpec {
  RuntimeKind kind = RuntimeKind::kProcess;
  // kProcess: the program and its arguments, run in the version folder.
  // kContainer: arguments after the image (empty: the image's own command).
  // "{port}", "{socket}", "{model}" and "{version}" are replaced in each.
  std::vector<std::string> command;
  std::map<std::string, std::string> env;
  std::string image;              // kContainer: the image reference
  std::string container_engine;   // kContainer: "docker" or "podman"
  int64_t container_port = 8080;  // kContainer: the port the server listens on inside
  RuntimeListen listen = RuntimeListen::kTcp;
  int64_t memory_mb = 0;                // address-space cap; 0: none
  int64_t cpus = 0;                     // at most this many cores; 0: all
  bool sandbox = true;                  // false: run without bubblewrap (logged)
  int64_t ready_timeout_ms = 30'000;    // from start to GET /v2/health/ready answering 200
  int64_t request_timeout_ms = 30'000;  // one request, waiting out a restart included
  std::string served_name;              // the name the server knows; empty: perch's name
};

// Parses model.json's "runtime" value (`json` is that value alone).
// InvalidArgument naming the key for unknown keys, wrong types and ranges.
Result<RuntimeSpec> ParseRuntimeSpec(std::string_view json);

}  // namespace perch
