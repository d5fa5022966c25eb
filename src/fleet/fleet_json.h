// JSON forms of the fleet types: the hub API's request and response bodies
// (docs/fleet.md), also used by the CLI and the agent, and for the few JSON
// columns of the hub's database. Parsers answer InvalidArgument naming the
// field that is wrong ("selector.labels.zone: must be a string").
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "fleet/fleet_types.h"

namespace perch {

std::string ToJson(const Labels& labels);
std::string ToJson(const Location& location);
std::string ToJson(const Device& device);
std::string ToJson(const Heartbeat& heartbeat);
std::string ToJson(const Selector& selector);
std::string ToJson(const Rollout& rollout);
std::string ToJson(const Revision& revision);
std::string ToJson(const Deployment& deployment);
std::string ToJson(const CanaryVerdict& verdict);
std::string ToJson(const DesiredState& state);
std::string ToJson(const LocationSpec& spec);
std::string ToJson(const DeviceSpec& spec);
std::string ToJson(const DeploymentSpec& spec);
std::string ToJson(const std::vector<std::string>& strings);
std::string ToJson(const WithToken<Location>& created);  // {"location":…,"enrolment_token":…}
std::string ToJson(const WithToken<Device>& enrolled);   // {"device":…,"token":…}
std::string ToJson(const DeployOutcome& outcome);        // {"deployment":…,"warnings":[…]}
std::string ToJson(const FleetStatus& status);           // {"now":…,"devices":[…]}
std::string ToJson(const LocationPeers& peers);  // {"location":…,"peer_token":…,"peers":[…]}
std::string ToJson(const std::vector<FleetEvent>& events);  // [{"at":…,"kind":…,…}]
// A JSON array of already encoded JSON values.
std::string JsonArray(const std::vector<std::string>& encoded);

Result<Labels> ParseLabels(std::string_view json);
Result<std::vector<std::string>> ParseStrings(std::string_view json);
Result<LocationSpec> ParseLocationSpec(std::string_view json);
Result<DeviceSpec> ParseDeviceSpec(std::string_view json);
Result<DeploymentSpec> ParseDeploymentSpec(std::string_view json);
Result<Heartbeat> ParseHeartbeat(std::string_view json);
Result<Selector> ParseSelector(std::string_view json);
Result<Rollout> ParseRollout(std::string_view json);
Result<Location> ParseLocation(std::string_view json);
Result<Device> ParseDevice(std::string_view json);
Result<Deployment> ParseDeployment(std::string_view json);
Result<CanaryVerdict> ParseCanaryVerdict(std::string_view json);
Result<DesiredState> ParseDesiredState(std::string_view json);
Result<WithToken<Location>> ParseCreatedLocation(std::string_view json);
Result<WithToken<Device>> ParseEnrolment(std::string_view json);
Result<DeployOutcome> ParseDeployOutcome(std::string_view json);
Result<FleetStatus> ParseFleetStatus(std::string_view json);
Result<LocationPeers> ParseLocationPeers(std::string_view json);
// An array of locations, devices or deployments (list answers).
Result<std::vector<Location>> ParseLocations(std::string_view json);
Result<std::vector<Device>> ParseDevices(std::string_view json);
Result<std::vector<Deployment>> ParseDeployments(std::string_view json);

}  // namespace perch
