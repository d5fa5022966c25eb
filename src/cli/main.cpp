// perch: one binary for every role (agent, hub, client tools).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <map>
#include <string>

#include "cli/commands.h"

namespace perch::cli {

const char* Version() { return PERCH_VERSION; }

}  // namespace perch::cli

int main(int argc, char** argv) {
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
  perch::cli::AddFleetCommands(app, runners);
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
