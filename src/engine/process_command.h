// The command lines perch runs a model's own server with: under bubblewrap,
// bare (when model.json turns the sandbox off), or through a container
// engine. Pure functions, so the exact lines are unit-tested.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "engine/runtime_spec.h"

namespace perch {

// One start of a model's server.
struct ProcessLaunch {
  std::filesystem::path version_folder;  // the model's files; the working folder
  std::string model_name;                // perch's name for the model
  int64_t version = 0;
  int port = 0;                       // kTcp: the loopback port the server listens on
  std::filesystem::path socket_path;  // kUnix: the socket the server creates
  std::filesystem::path bwrap;        // the bubblewrap binary; empty: none installed
};

struct ProcessCommand {
  std::vector<std::string> argv;           // argv[0] is an absolute path or a name on PATH
  std::map<std::string, std::string> env;  // the whole environment: nothing is inherited
  bool sandboxed = false;
};

// `spec.command` with {port}, {socket}, {model} and {version} replaced.
std::vector<std::string> ExpandCommand(const std::vector<std::string>& command,
                                       const ProcessLaunch& launch);

// kProcess: the server under bubblewrap (read-only system and model folder,
// a private /tmp, no other file of the host, no network with kUnix), or bare
// when `spec.sandbox` is false. InvalidArgument when the sandbox is asked
// for and bubblewrap is not installed.
Result<ProcessCommand> BuildProcessCommand(const RuntimeSpec& spec, const ProcessLaunch& launch);

// kContainer: `<engine> run --rm ...` publishing the server's port on
// loopback only, the model folder read-only at /model, a read-only root, a
// private /tmp, the memory and CPU limits, and the environment.
ProcessCommand BuildContainerCommand(const RuntimeSpec& spec, const ProcessLaunch& launch);

// The environment every server gets: PATH, HOME=/tmp, PERCH_* names of its
// model, port and socket, then `spec.env`.
std::map<std::string, std::string> ServerEnvironment(const RuntimeSpec& spec,
                                                     const ProcessLaunch& launch);

}  // namespace perch
