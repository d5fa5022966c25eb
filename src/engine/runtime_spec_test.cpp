#include "engine/runtime_spec.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "engine/process_command.h"

namespace perch {
namespace {

bool Contains(const std::vector<std::string>& argv, const std::vector<std::string>& run) {
  return std::search(argv.begin(), argv.end(), run.begin(), run.end()) != argv.end();
}

TEST(RuntimeSpecTest, ParsesAProcessRuntime) {
  const auto spec = ParseRuntimeSpec(
      R"({"kind": "process", "command": ["python3", "server.py", "{port}"], "env": {"A": "1"},
          "memory_mb": 256, "cpus": 1, "ready_timeout_ms": 5000, "listen": "unix"})");
  ASSERT_TRUE(spec.ok()) << spec.status().message();
  EXPECT_EQ(spec->kind, RuntimeKind::kProcess);
  EXPECT_EQ(spec->command.size(), 3u);
  EXPECT_EQ(spec->env.at("A"), "1");
  EXPECT_EQ(spec->memory_mb, 256);
  EXPECT_EQ(spec->cpus, 1);
  EXPECT_EQ(spec->listen, RuntimeListen::kUnix);
  EXPECT_TRUE(spec->sandbox);
}

TEST(RuntimeSpecTest, RefusesBadRuntimesNamingTheKey) {
  const std::pair<const char*, const char*> cases[] = {
      {R"([])", "must be an object"},
      {R"({"command": ["x"]})", "needs \"kind\""},
      {R"({"kind": "vm"})", "runtime.kind \"vm\" is unknown"},
      {R"({"kind": "process"})", "needs \"command\""},
      {R"({"kind": "process", "command": "python3 x.py"})", "must be an array"},
      {R"({"kind": "process", "command": ["x", 1]})", "not a string"},
      {R"({"kind": "process", "command": ["x"], "env": {"A=B": "1"}})", "without '='"},
      {R"({"kind": "process", "command": ["x"], "memory_mb": 1})", "runtime.memory_mb"},
      {R"({"kind": "process", "command": ["x"], "sandbox": "no"})", "runtime.sandbox"},
      {R"({"kind": "process", "command": ["x"], "image": "a"})", "belong to kind \"container\""},
      {R"({"kind": "process", "command": ["x"], "colour": 1})", "unknown key \"colour\""},
      {R"({"kind": "container"})", "needs \"image\""},
      {R"({"kind": "container", "image": "a", "engine": "lxc"})", "engine \"lxc\""},
      {R"({"kind": "container", "image": "-v"})", "cannot start with '-'"},
      {R"({"kind": "container", "image": "a", "listen": "unix"})", "for kind \"process\""},
      {R"({"kind": "process", "command": ["x"], "model_name": "a/b"})", "model_name"},
  };
  for (const auto& [json, message] : cases) {
    const auto spec = ParseRuntimeSpec(json);
    ASSERT_FALSE(spec.ok()) << json;
    EXPECT_EQ(spec.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(spec.status().message().find(message), std::string::npos)
        << json << " -> " << spec.status().message();
  }
}

ProcessLaunch Launch() {
  return {.version_folder = "/repo/iris/1",
          .model_name = "iris",
          .version = 1,
          .port = 4321,
          .socket_path = {},
          .bwrap = "/usr/bin/bwrap"};
}

TEST(ProcessCommandTest, SandboxesTheServerWithBubblewrap) {
  const auto spec = ParseRuntimeSpec(
      R"({"kind": "process", "command": ["python3", "server.py", "--port", "{port}"],
          "env": {"THREADS": "1"}})");
  ASSERT_TRUE(spec.ok());
  const auto command = BuildProcessCommand(*spec, Launch());
  ASSERT_TRUE(command.ok()) << command.status().message();
  const auto& argv = command->argv;
  EXPECT_TRUE(command->sandboxed);
  EXPECT_EQ(argv[0], "/usr/bin/bwrap");
  EXPECT_TRUE(Contains(argv, {"--die-with-parent"}));
  EXPECT_TRUE(Contains(argv, {"--unshare-all"}));
  EXPECT_TRUE(Contains(argv, {"--share-net"}));
  EXPECT_TRUE(Contains(argv, {"--ro-bind", "/usr", "/usr"}));
  EXPECT_TRUE(Contains(argv, {"--tmpfs", "/tmp", "--ro-bind", "/repo/iris/1", "/repo/iris/1"}));
  EXPECT_TRUE(
      Contains(argv, {"--chdir", "/repo/iris/1", "--", "python3", "server.py", "--port", "4321"}));
  EXPECT_EQ(argv.back(), "4321");
  EXPECT_EQ(command->env.at("PERCH_PORT"), "4321");
  EXPECT_EQ(command->env.at("PERCH_MODEL_NAME"), "iris");
  EXPECT_EQ(command->env.at("THREADS"), "1");
  EXPECT_FALSE(command->env.contains("PERCH_HUB_TOKEN"));
}

TEST(ProcessCommandTest, AUnixSocketServerGetsNoNetwork) {
  auto spec = ParseRuntimeSpec(
      R"({"kind": "process", "command": ["./server", "{socket}"], "listen": "unix"})");
  ASSERT_TRUE(spec.ok());
  ProcessLaunch launch = Launch();
  launch.socket_path = "/tmp/perch-model-x/server.sock";
  const auto command = BuildProcessCommand(*spec, launch);
  ASSERT_TRUE(command.ok());
  EXPECT_FALSE(Contains(command->argv, {"--share-net"}));
  EXPECT_TRUE(Contains(command->argv, {"--bind", "/tmp/perch-model-x", "/tmp/perch-model-x"}));
  EXPECT_EQ(command->argv.back(), "/tmp/perch-model-x/server.sock");
  EXPECT_EQ(command->env.at("PERCH_SOCKET"), "/tmp/perch-model-x/server.sock");
}

TEST(ProcessCommandTest, UnsandboxedOnlyWhenAskedAndRefusedWithoutBubblewrap) {
  auto spec = ParseRuntimeSpec(R"({"kind": "process", "command": ["python3", "s.py"]})");
  ASSERT_TRUE(spec.ok());
  ProcessLaunch launch = Launch();
  launch.bwrap.clear();
  const auto refused = BuildProcessCommand(*spec, launch);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("bubblewrap"), std::string::npos);
  spec->sandbox = false;
  const auto bare = BuildProcessCommand(*spec, launch);
  ASSERT_TRUE(bare.ok());
  EXPECT_FALSE(bare->sandboxed);
  EXPECT_EQ(bare->argv, (std::vector<std::string>{"python3", "s.py"}));
}

TEST(ProcessCommandTest, BuildsTheContainerCommandLine) {
  const auto spec = ParseRuntimeSpec(
      R"({"kind": "container", "engine": "podman", "image": "registry.local/iris:1",
          "port": 9000, "memory_mb": 512, "cpus": 2, "env": {"A": "b"},
          "command": ["--model", "{model}"]})");
  ASSERT_TRUE(spec.ok()) << spec.status().message();
  const ProcessCommand command = BuildContainerCommand(*spec, Launch());
  const auto& argv = command.argv;
  EXPECT_EQ(argv[0], "podman");
  EXPECT_EQ(argv[1], "run");
  EXPECT_TRUE(Contains(argv, {"--rm"}));
  EXPECT_TRUE(Contains(argv, {"--name", "perch-iris-1-4321"}));
  EXPECT_TRUE(Contains(argv, {"--read-only"}));
  EXPECT_TRUE(Contains(argv, {"--tmpfs", "/tmp"}));
  EXPECT_TRUE(Contains(argv, {"--cap-drop", "ALL"}));
  EXPECT_TRUE(Contains(argv, {"--publish", "127.0.0.1:4321:9000"}));
  EXPECT_TRUE(Contains(argv, {"--volume", "/repo/iris/1:/model:ro"}));
  EXPECT_TRUE(Contains(argv, {"--memory", "512m"}));
  EXPECT_TRUE(Contains(argv, {"--cpus", "2"}));
  EXPECT_TRUE(Contains(argv, {"--env", "A=b"}));
  EXPECT_TRUE(Contains(argv, {"--env", "PERCH_PORT=9000"}));
  EXPECT_TRUE(Contains(argv, {"--env", "PERCH_HOST=0.0.0.0"}));
  EXPECT_TRUE(Contains(argv, {"registry.local/iris:1", "--model", "iris"}));
  EXPECT_EQ(argv.back(), "iris");
}

}  // namespace
}  // namespace perch
