#include "engine/runtime_spec.h"

#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "core/enum_names.h"

namespace perch {
namespace {

using nlohmann::json;

constexpr EnumNames<RuntimeKind, 2> kKindNames{{
    {RuntimeKind::kProcess, "process"},
    {RuntimeKind::kContainer, "container"},
}};

constexpr EnumNames<RuntimeListen, 2> kListenNames{{
    {RuntimeListen::kTcp, "tcp"},
    {RuntimeListen::kUnix, "unix"},
}};

constexpr std::string_view kKeys[] = {
    "kind",      "command",   "env",  "image",   "engine",           "port",
    "listen",    "memory_mb", "cpus", "sandbox", "ready_timeout_ms", "request_timeout_ms",
    "model_name"};

Result<int64_t> Integer(const json& object, const char* key, int64_t min, int64_t max) {
  const json& value = object.at(key);
  if (!value.is_number_integer() || value.get<int64_t>() < min || value.get<int64_t>() > max) {
    return InvalidArgument(fmt::format("runtime.{} must be an integer from {} to {}, not {}", key,
                                       min, max, value.dump()));
  }
  return value.get<int64_t>();
}

Result<std::string> String(const json& object, const char* key) {
  const json& value = object.at(key);
  if (!value.is_string() || value.get<std::string>().empty()) {
    return InvalidArgument(fmt::format("runtime.{} must be a non-empty string", key));
  }
  return value.get<std::string>();
}

Result<std::vector<std::string>> Command(const json& value) {
  if (!value.is_array()) {
    return InvalidArgument(
        "runtime.command must be an array of strings, such as "
        "[\"python3\", \"server.py\", \"--port\", \"{port}\"]");
  }
  std::vector<std::string> command;
  for (const json& arg : value) {
    if (!arg.is_string()) {
      return InvalidArgument(
          fmt::format("runtime.command lists {}, which is not a string", arg.dump()));
    }
    command.push_back(arg.get<std::string>());
  }
  return command;
}

Result<std::map<std::string, std::string>> Env(const json& value) {
  if (!value.is_object()) {
    return InvalidArgument(
        "runtime.env must be an object of strings, such as {\"THREADS\": \"1\"}");
  }
  std::map<std::string, std::string> env;
  for (const auto& [key, item] : value.items()) {
    if (key.empty() || key.find('=') != std::string::npos || !item.is_string()) {
      return InvalidArgument(
          fmt::format("runtime.env entry \"{}\" needs a name without '=' and a string value", key));
    }
    env[key] = item.get<std::string>();
  }
  return env;
}

}  // namespace

std::string_view ToString(RuntimeKind kind) { return EnumToString(kKindNames, kind); }
std::optional<RuntimeKind> RuntimeKindFromString(std::string_view name) {
  return EnumFromString(kKindNames, name);
}
std::string_view ToString(RuntimeListen listen) { return EnumToString(kListenNames, listen); }
std::optional<RuntimeListen> RuntimeListenFromString(std::string_view name) {
  return EnumFromString(kListenNames, name);
}

Result<RuntimeSpec> ParseRuntimeSpec(std::string_view text) {
  const json root = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) {
    return InvalidArgument(
        "\"runtime\" must be an object such as {\"kind\": \"process\", \"command\": [...]}");
  }
  for (const auto& [key, value] : root.items()) {
    if (std::find(std::begin(kKeys), std::end(kKeys), key) == std::end(kKeys)) {
      return InvalidArgument(fmt::format("runtime has unknown key \"{}\"; known keys: {}", key,
                                         fmt::join(kKeys, ", ")));
    }
  }
  RuntimeSpec spec;
  if (!root.contains("kind")) {
    return InvalidArgument("runtime needs \"kind\": \"process\" or \"container\"");
  }
  PERCH_ASSIGN_OR_RETURN(const std::string kind_name, String(root, "kind"));
  const auto kind = RuntimeKindFromString(kind_name);
  if (!kind) {
    return InvalidArgument(
        fmt::format("runtime.kind \"{}\" is unknown; use process or container", kind_name));
  }
  spec.kind = *kind;
  if (root.contains("command")) {
    PERCH_ASSIGN_OR_RETURN(spec.command, Command(root["command"]));
  }
  if (root.contains("env")) {
    PERCH_ASSIGN_OR_RETURN(spec.env, Env(root["env"]));
  }
  if (spec.kind == RuntimeKind::kProcess) {
    if (spec.command.empty() || spec.command[0].empty()) {
      return InvalidArgument("a process runtime needs \"command\": the program and its arguments");
    }
    if (root.contains("image") || root.contains("engine") || root.contains("port")) {
      return InvalidArgument("runtime.image, engine and port belong to kind \"container\"");
    }
  } else {
    if (!root.contains("image")) {
      return InvalidArgument("a container runtime needs \"image\", the image reference to run");
    }
    PERCH_ASSIGN_OR_RETURN(spec.image, String(root, "image"));
    if (spec.image[0] == '-') {
      return InvalidArgument("runtime.image cannot start with '-'");
    }
    spec.container_engine = "docker";
    if (root.contains("engine")) {
      PERCH_ASSIGN_OR_RETURN(spec.container_engine, String(root, "engine"));
      if (spec.container_engine != "docker" && spec.container_engine != "podman") {
        return InvalidArgument(fmt::format("runtime.engine \"{}\" is unknown; use docker or podman",
                                           spec.container_engine));
      }
    }
    if (root.contains("port")) {
      PERCH_ASSIGN_OR_RETURN(spec.container_port, Integer(root, "port", 1, 65535));
    }
  }
  if (root.contains("listen")) {
    PERCH_ASSIGN_OR_RETURN(const std::string listen_name, String(root, "listen"));
    const auto listen = RuntimeListenFromString(listen_name);
    if (!listen) {
      return InvalidArgument(
          fmt::format("runtime.listen \"{}\" is unknown; use tcp or unix", listen_name));
    }
    if (*listen == RuntimeListen::kUnix && spec.kind == RuntimeKind::kContainer) {
      return InvalidArgument("runtime.listen \"unix\" is for kind \"process\" only");
    }
    spec.listen = *listen;
  }
  if (root.contains("memory_mb")) {
    PERCH_ASSIGN_OR_RETURN(spec.memory_mb, Integer(root, "memory_mb", 16, int64_t{1} << 30));
  }
  if (root.contains("cpus")) {
    PERCH_ASSIGN_OR_RETURN(spec.cpus, Integer(root, "cpus", 1, 4096));
  }
  if (root.contains("sandbox")) {
    if (!root["sandbox"].is_boolean()) {
      return InvalidArgument("runtime.sandbox must be true or false");
    }
    spec.sandbox = root["sandbox"].get<bool>();
  }
  if (root.contains("ready_timeout_ms")) {
    PERCH_ASSIGN_OR_RETURN(spec.ready_timeout_ms,
                           Integer(root, "ready_timeout_ms", 100, 3'600'000));
  }
  if (root.contains("request_timeout_ms")) {
    PERCH_ASSIGN_OR_RETURN(spec.request_timeout_ms,
                           Integer(root, "request_timeout_ms", 10, 3'600'000));
  }
  if (root.contains("model_name")) {
    PERCH_ASSIGN_OR_RETURN(spec.served_name, String(root, "model_name"));
    if (spec.served_name.find_first_of("/?#% ") != std::string::npos) {
      return InvalidArgument("runtime.model_name cannot hold '/', '?', '#', '%' or spaces");
    }
  }
  return spec;
}

}  // namespace perch
