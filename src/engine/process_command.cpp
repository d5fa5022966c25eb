#include "engine/process_command.h"

#include <fmt/format.h>

namespace perch {
namespace {

namespace fs = std::filesystem;

constexpr const char* kPath = "/usr/local/bin:/usr/bin:/bin";

void ReplaceAll(std::string& text, std::string_view from, const std::string& to) {
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
}

// The system folders a server needs to run, read-only. Merged-/usr systems
// have /bin, /lib... as links into /usr: they stay links.
void AddSystem(std::vector<std::string>& argv) {
  for (const char* folder :
       {"/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"}) {
    std::error_code error;
    const fs::path path(folder);
    if (fs::is_symlink(path, error)) {
      argv.insert(argv.end(), {"--symlink", fs::read_symlink(path, error).string(), folder});
    } else if (fs::is_directory(path, error)) {
      argv.insert(argv.end(), {"--ro-bind", folder, folder});
    }
  }
}

}  // namespace

std::vector<std::string> ExpandCommand(const std::vector<std::string>& command,
                                       const ProcessLaunch& launch) {
  std::vector<std::string> expanded = command;
  for (std::string& arg : expanded) {
    ReplaceAll(arg, "{port}", std::to_string(launch.port));
    ReplaceAll(arg, "{socket}", launch.socket_path.string());
    ReplaceAll(arg, "{model}", launch.model_name);
    ReplaceAll(arg, "{version}", std::to_string(launch.version));
  }
  return expanded;
}

std::map<std::string, std::string> ServerEnvironment(const RuntimeSpec& spec,
                                                     const ProcessLaunch& launch) {
  std::map<std::string, std::string> env = {
      {"PATH", kPath},
      {"HOME", "/tmp"},
      {"LANG", "C.UTF-8"},
      {"PYTHONUNBUFFERED", "1"},         // its log lines reach perch's log as they are written
      {"PYTHONDONTWRITEBYTECODE", "1"},  // the model folder is read-only
      {"PERCH_MODEL_NAME", launch.model_name},
      {"PERCH_MODEL_VERSION", std::to_string(launch.version)},
  };
  if (spec.listen == RuntimeListen::kTcp) {
    env["PERCH_HOST"] = "127.0.0.1";
    env["PERCH_PORT"] = std::to_string(launch.port);
  } else {
    env["PERCH_SOCKET"] = launch.socket_path.string();
  }
  for (const auto& [key, value] : spec.env) {
    env[key] = value;
  }
  return env;
}

Result<ProcessCommand> BuildProcessCommand(const RuntimeSpec& spec, const ProcessLaunch& launch) {
  ProcessCommand command;
  command.env = ServerEnvironment(spec, launch);
  const std::vector<std::string> server = ExpandCommand(spec.command, launch);
  if (!spec.sandbox) {
    command.argv = server;
    return command;
  }
  if (launch.bwrap.empty()) {
    return InvalidArgument(
        "the model runs sandboxed but bubblewrap (bwrap) is not installed; install the "
        "bubblewrap package, or set \"sandbox\": false in its model.json runtime");
  }
  const std::string folder = launch.version_folder.string();
  command.sandboxed = true;
  command.argv = {launch.bwrap.string(), "--die-with-parent", "--new-session", "--unshare-all"};
  if (spec.listen == RuntimeListen::kTcp) {
    command.argv.push_back("--share-net");  // loopback is how perch reaches it
  }
  AddSystem(command.argv);
  command.argv.insert(command.argv.end(), {"--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
                                           "--ro-bind", folder, folder});
  if (spec.listen == RuntimeListen::kUnix) {
    const std::string socket_folder = launch.socket_path.parent_path().string();
    command.argv.insert(command.argv.end(), {"--bind", socket_folder, socket_folder});
  }
  command.argv.insert(command.argv.end(), {"--chdir", folder, "--"});
  command.argv.insert(command.argv.end(), server.begin(), server.end());
  return command;
}

ProcessCommand BuildContainerCommand(const RuntimeSpec& spec, const ProcessLaunch& launch) {
  ProcessCommand command;
  command.sandboxed = true;
  command.env = {{"PATH", kPath}, {"HOME", "/tmp"}};
  const std::string name =
      fmt::format("perch-{}-{}-{}", launch.model_name, launch.version, launch.port);
  command.argv = {spec.container_engine,
                  "run",
                  "--rm",
                  "--init",
                  "--name",
                  name,
                  "--read-only",
                  "--tmpfs",
                  "/tmp",
                  "--security-opt",
                  "no-new-privileges",
                  "--cap-drop",
                  "ALL",
                  "--publish",
                  fmt::format("127.0.0.1:{}:{}", launch.port, spec.container_port),
                  "--volume",
                  fmt::format("{}:/model:ro", launch.version_folder.string()),
                  "--workdir",
                  "/model"};
  if (spec.memory_mb > 0) {
    command.argv.insert(command.argv.end(), {"--memory", fmt::format("{}m", spec.memory_mb)});
  }
  if (spec.cpus > 0) {
    command.argv.insert(command.argv.end(), {"--cpus", std::to_string(spec.cpus)});
  }
  ProcessLaunch inside = launch;
  inside.port = static_cast<int>(spec.container_port);
  std::map<std::string, std::string> env = ServerEnvironment(spec, inside);
  env.erase("PATH");              // the image's own
  env["PERCH_HOST"] = "0.0.0.0";  // inside its own network namespace
  for (const auto& [key, value] : env) {
    command.argv.insert(command.argv.end(), {"--env", fmt::format("{}={}", key, value)});
  }
  command.argv.push_back(spec.image);
  const std::vector<std::string> args = ExpandCommand(spec.command, inside);
  command.argv.insert(command.argv.end(), args.begin(), args.end());
  return command;
}

}  // namespace perch
