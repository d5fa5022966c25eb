// perch: one binary for every role (agent, hub, client tools).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

#include "cli/commands.h"

namespace perch::cli {

const char* Version() { return PERCH_VERSION; }

sigset_t BlockStopSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  return signals;
}

}  // namespace perch::cli

int main(int argc, char** argv) {
  // ONNX Runtime 1.29 and later send usage telemetry to Microsoft and keep a
  // device id and an event cache under ~/.cache and /tmp unless this is set
  // before its first Ort::Env: an edge agent must not call out or write there
  // unasked (docs/architecture.md). Set before any thread starts, as setenv
  // requires; a value the user set wins.
  setenv("ORT_DISABLE_TELEMETRY", "1", /*overwrite=*/0);
  CLI::App app{"perch: run ML models at the edge, served over the Open Inference Protocol"};
  app.require_subcommand(1);
  app.set_version_flag("--version", perch::cli::Version());

  std::map<const CLI::App*, perch::cli::CommandRunner> runners;
  auto* version = app.add_subcommand("version", "Print the version and exit");
  runners[version] = [] {
    std::printf("perch %s\n", perch::cli::Version());
    return 0;
  };
  auto* serve = app.add_subcommand("serve", "Serve the models of a model repository (the agent)");
  runners[serve] = perch::cli::AddServeCommand(*serve);
  auto* infer = app.add_subcommand("infer", "Send one inference request to a running agent");
  runners[infer] = perch::cli::AddInferCommand(*infer);
  auto* perf = app.add_subcommand("perf", "Measure throughput and latency under load");
  runners[perf] = perch::cli::AddPerfCommand(*perf);
  auto* push = app.add_subcommand("push", "Push a model version to an OCI registry");
  runners[push] = perch::cli::AddPushCommand(*push);
  auto* pull = app.add_subcommand(
      "pull", "Pull a model version from an OCI registry into a model repository");
  runners[pull] = perch::cli::AddPullCommand(*pull);
  auto* ls =
      app.add_subcommand("ls", "List the repositories of a registry, or the tags of a repository");
  runners[ls] = perch::cli::AddLsCommand(*ls);
  auto* inspect = app.add_subcommand("inspect", "Show a model's manifest, metadata and layers");
  runners[inspect] = perch::cli::AddInspectCommand(*inspect);
  auto* tag = app.add_subcommand("tag", "Give a model in a registry another tag");
  runners[tag] = perch::cli::AddTagCommand(*tag);
  auto* rm = app.add_subcommand("rm", "Delete a model manifest from a registry");
  runners[rm] = perch::cli::AddRmCommand(*rm);
  auto* batch = app.add_subcommand(
      "batch", "Score files of requests (or stdin) with one model, locally or on a Dask cluster");
  runners[batch] = perch::cli::AddBatchCommand(*batch);
  auto* sign = app.add_subcommand("sign", "Sign a model (OpenSSF Model Signing v1.0, key method)");
  runners[sign] = perch::cli::AddSignCommand(*sign);
  auto* verify = app.add_subcommand("verify", "Verify a model's signature with a public key");
  runners[verify] = perch::cli::AddVerifyCommand(*verify);
  perch::cli::AddFleetCommands(app, runners);
  perch::cli::AddBundleCommands(app, runners);
#ifdef PERCH_WITH_HUB
  auto* hub = app.add_subcommand("hub", "Serve the OCI model registry (the hub)");
  runners[hub] = perch::cli::AddHubCommand(*hub);
#endif

  CLI11_PARSE(app, argc, argv);
  for (const auto* subcommand : app.get_subcommands()) {
    return runners.at(subcommand)();
  }
  return 0;
}
