// A client of the hub's fleet API (/api/v1/, docs/fleet.md), used by the
// agent (enrol, desired state, heartbeats) and by the CLI (locations,
// devices, deployments, status).
//
// Errors are Status values that say what to fix: Unavailable when the hub
// cannot be reached ("hub http://10.0.0.5:8080 is unreachable: connection
// refused"), and the hub's own code and message otherwise
// (InvalidArgument naming the field, Unauthenticated, PermissionDenied,
// NotFound, AlreadyExists). No exception leaves this class.
//
// Threading: one HubClient is used by one thread at a time.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <vector>

#include "core/status.h"
#include "fleet/fleet_types.h"

namespace perch {

struct HubClientOptions {
  std::string url{};    // "http://HOST:PORT" or "https://HOST:PORT"
  std::string token{};  // admin, device or enrolment token, as the call needs
  std::chrono::seconds timeout{10};
  std::string ca_file{};  // https: PEM CAs to trust instead of the system's
  // Once requested, a call in progress ends with Cancelled within about a
  // second, and later calls fail at once (http::ClientOptions::stop).
  std::stop_token stop{};
};

class HubClient {
 public:
  // InvalidArgument for a URL that is not http(s)://HOST[:PORT].
  static Result<std::unique_ptr<HubClient>> Create(HubClientOptions options);
  ~HubClient();
  HubClient(const HubClient&) = delete;
  HubClient& operator=(const HubClient&) = delete;

  const std::string& url() const;
  // Later calls send this token (after enrolment: the device's own).
  void SetToken(std::string token);

  // The agent's calls.
  Result<WithToken<Device>> Enrol(const DeviceSpec& spec);
  // nullopt when the desired state still has `etag` (HTTP 304).
  Result<std::optional<DesiredState>> GetDesiredState(const std::string& device,
                                                      const std::string& etag);
  Status SendHeartbeat(const std::string& device, const Heartbeat& heartbeat);
  // Network local: the device's peers and its location's peer token.
  Result<LocationPeers> GetPeers(const std::string& device);

  // The admin's calls.
  Result<WithToken<Location>> CreateLocation(const LocationSpec& spec);
  Result<std::vector<Location>> Locations();
  Result<Location> GetLocation(const std::string& name);
  // A new enrolment token for the location; the old one stops working.
  Result<std::string> RotateEnrolmentToken(const std::string& location);
  Result<std::vector<Device>> Devices();
  Result<Device> GetDevice(const std::string& name);
  Result<Device> RevokeDevice(const std::string& name);
  // Creates the deployment, or adds a revision to it (`create_only`: 409
  // when it exists).
  Result<DeployOutcome> Deploy(const DeploymentSpec& spec, bool create_only);
  Result<Deployment> Rollback(const std::string& name);
  Result<std::vector<Deployment>> Deployments();
  Result<Deployment> GetDeployment(const std::string& name);
  Result<FleetStatus> GetStatus();

 private:
  class Impl;
  explicit HubClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace perch
