// The subcommands of `perch`. Each Add* declares its options on `app` and
// returns the function that runs it once parsing succeeded (its exit code).
#pragma once

#include <CLI/CLI.hpp>
#include <csignal>
#include <functional>
#include <map>

namespace perch::cli {

using CommandRunner = std::function<int()>;

CommandRunner AddServeCommand(CLI::App& app);
CommandRunner AddInferCommand(CLI::App& app);
CommandRunner AddPerfCommand(CLI::App& app);
CommandRunner AddPushCommand(CLI::App& app);
CommandRunner AddPullCommand(CLI::App& app);
CommandRunner AddLsCommand(CLI::App& app);
CommandRunner AddInspectCommand(CLI::App& app);
CommandRunner AddTagCommand(CLI::App& app);
CommandRunner AddRmCommand(CLI::App& app);
CommandRunner AddBatchCommand(CLI::App& app);
CommandRunner AddSignCommand(CLI::App& app);
CommandRunner AddVerifyCommand(CLI::App& app);
// locations, devices, deployments, deploy, rollback, status.
void AddFleetCommands(CLI::App& app, std::map<const CLI::App*, CommandRunner>& runners);
#ifdef PERCH_WITH_HUB
CommandRunner AddHubCommand(CLI::App& app);
#endif

// Blocks SIGINT and SIGTERM in every thread (threads inherit the mask) so
// that the main thread alone receives them, synchronously, with sigwait.
sigset_t BlockStopSignals();

// The version perch was built as, e.g. "0.1.0".
const char* Version();

}  // namespace perch::cli
