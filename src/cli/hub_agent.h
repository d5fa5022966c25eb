// `perch serve --hub URL`: the flags of an agent that takes its models from
// a hub, and the FleetAgent wired to the model store (pulls go through the
// same cache in --state as `--model`).
#pragma once

#include <CLI/CLI.hpp>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "cli/registry_flags.h"
#include "core/log.h"
#include "core/status.h"
#include "fleet/fleet_agent.h"

namespace perch::cli {

struct HubAgentFlags {
  std::string url;  // empty: no hub
  double poll_seconds = 5;
  double heartbeat_seconds = 10;
  int warmup_runs = 1;
  std::vector<std::string> labels;  // KEY=VALUE
};

void AddHubAgentFlags(CLI::App& app, HubAgentFlags& flags);

// What OpenHubAgent checks before it touches --state: the labels, the
// device name (`device`, the host name when empty) and the hub URL.
// InvalidArgument naming the flag.
Status CheckHubAgentFlags(const HubAgentFlags& flags, const std::string& device);

// `device` names the device (the host name when empty). The enrolment
// token is `registry.token` (--token): on the first start it enrols the
// device, which then uses its own token for the hub and its registry.
Result<std::unique_ptr<FleetAgent>> OpenHubAgent(
    const HubAgentFlags& flags, const RegistryFlags& registry, const std::string& device,
    const std::filesystem::path& state, const Logger& logger,
    std::function<void(const LocationPeers&)> on_peers = {});

// --label KEY=VALUE flags (of serve and of the fleet commands) into labels.
// InvalidArgument naming the flag that is malformed.
Result<Labels> ParseLabelFlags(const std::vector<std::string>& flags);

// The host name in the fleet's name grammar: lowercase, other characters
// turned into '-'.
std::string DefaultDeviceName();

}  // namespace perch::cli
