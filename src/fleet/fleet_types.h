// The fleet's vocabulary, shared by the hub (which stores it), its API
// (which speaks it as JSON) and the agent (which reconciles to it): edge
// locations, the devices enrolled in them, deployments of model references
// to the devices a selector picks, and what each device reports back.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fleet/device_facts.h"
#include "fleet/device_metrics.h"

namespace perch {

using Labels = std::map<std::string, std::string>;

// `[a-z0-9]([a-z0-9_.-]{0,62}[a-z0-9])?`: location, device and deployment
// names, also used in MQTT topics and URLs.
bool IsValidFleetName(std::string_view name);
// Label keys follow the fleet name rule; values are at most 256 printable
// characters.
bool IsValidLabel(std::string_view key, std::string_view value);
// An enrolment key: 32 to 128 of letters, digits, '-' and '_' (agents make
// 64 hex digits); shorter would be guessable by whoever has the enrolment
// token.
bool IsValidEnrolmentKey(std::string_view key);
constexpr const char* kEnrolmentKeyRule =
    "must be 32 to 128 of letters, digits, '-' and '_' (perch makes 64 hex digits)";

struct LocationSpec {
  std::string name{};
  std::string description{};
  Labels labels{};
};

struct Location {
  std::string name{};
  std::string description{};
  Labels labels{};
  int64_t created_at = 0;  // unix seconds
};

struct DeviceSpec {
  std::string name{};
  Labels labels{};
  std::string architecture{};  // "amd64", "arm64", ...
  std::string perch_version{};
  std::vector<std::string> addresses{};
  DeviceFacts facts{};  // what the device is (fleet/device_facts.h)
  // The agent's own random secret, kept in its state folder from before its
  // first enrolment request: a repeat enrolment of the same name with the
  // same key is that agent again (its answer was lost), not another device.
  // Empty: an agent before enrolment keys (a repeat is refused, as it was).
  std::string enrolment_key{};
};

// What the device's trust policy said of a model version (docs/signing.md).
struct SignatureState {
  // "verified" (by `key`), "signed" (carries a signature the device, which
  // trusts no key, did not check), "unsigned", "refused" (the model's error
  // says why); empty: not known (not checked yet, or an older agent).
  std::string state{};
  std::string key{};         // verified: the trusted key's file name
  std::string key_sha256{};  // verified: sha256 (hex) of the key's PEM, the signers' `hint`
};

// One model as a device reports it.
struct ModelReport {
  std::string name{};
  int64_t version = 0;
  std::string reference{};  // the deployed reference it came from, if any
  std::string digest{};     // manifest digest actually loaded
  std::string state{};      // READY, LOADING, UNAVAILABLE, FAILED
  std::string error{};
  SignatureState signature{};
};

struct Heartbeat {
  std::vector<ModelReport> models{};
  std::vector<std::string> errors{};
  double load = 0;  // 1-minute load average of the device
  // MemAvailable of /proc/meminfo: what the device can still load; 0 when
  // unknown. Placement prefers devices with more.
  int64_t memory_available_bytes = 0;
  int64_t outbox_depth = 0;
  int64_t last_inference_at = 0;  // unix seconds, 0: never
  std::string applied_etag{};     // desired state the device serves
  // The generation of the last location bundle imported into the device's
  // state (docs/edge-cloud.md), 0 when none: what a site that ran on
  // bundles last ran, until the hub's desired state supersedes it.
  int64_t bundle_generation = 0;
  // Network local: where the location's other agents reach this one, and
  // the digests of the blobs it holds verified (shared with them).
  std::string advertise_url{};  // REST base URL; empty: not reachable by peers
  std::string grpc_address{};   // HOST:PORT; empty: none
  std::vector<std::string> blobs{};
  // What the device measured since its previous heartbeat; absent from
  // agents older than device metrics.
  std::optional<HeartbeatMetrics> metrics{};
  // What the device is now (memory or a driver can change over its life);
  // absent from agents older than device facts.
  std::optional<DeviceFacts> facts{};
};

struct Device {
  std::string name{};
  std::string location{};
  Labels labels{};
  std::string architecture{};
  std::string perch_version{};
  std::vector<std::string> addresses{};
  int64_t enrolled_at = 0;
  int64_t last_seen = 0;  // 0: never heard from since enrolment
  bool revoked = false;
  int64_t revoked_at =
      0;                // unix seconds; 0 when not revoked, or revoked by a hub before this field
  DeviceFacts facts{};  // as of the enrolment or the last heartbeat that had them
  std::optional<Heartbeat> heartbeat{};  // the last one
};

// "revoked", "offline" (not heard from within `online_seconds` of `now`),
// "failing" (online with errors or a FAILED model) or "online", as
// `perch status`, the hub's /metrics and its dashboard count devices.
std::string_view DeviceStateAt(const Device& device, int64_t now, int64_t online_seconds);

// Which devices a deployment targets: every given field must match; an
// empty selector matches every device.
struct Selector {
  std::string location{};
  Labels labels{};
  std::string architecture{};
  std::string device{};
  FactSelector facts{};  // CPU, memory, accelerators (fleet/device_facts.h)

  bool Matches(const Device& device) const;
};

enum class RolloutStrategy { kAllAtOnce, kCanary };
std::string_view ToString(RolloutStrategy strategy);
std::optional<RolloutStrategy> RolloutStrategyFromString(std::string_view name);

// A canary judged on what its devices measure (docs/fleet.md "Canary
// analysis"): the new revision's failure rate and p99 latency against the
// previous revision's on the same devices, window by window. The defaults
// are justified there.
struct CanaryAnalysis {
  int64_t window_seconds = 60;
  int64_t min_requests = 50;  // per window and side; fewer: inconclusive
  // Fails when the failure rate rises by more than this (absolute: 0.01 is
  // one percentage point) ...
  double max_failure_rate_increase = 0.01;
  // ... or p99 grows past previous p99 * this.
  double max_p99_ratio = 1.5;
  int64_t failing_windows = 2;  // in a row: roll back on every device
  int64_t passing_windows = 3;  // in a row: promote
  // Still not promoted this long after the revision was made: rolled back.
  int64_t deadline_seconds = 1800;
  // Canary devices whose model failed to load, in percent, that stop the
  // rollout fleet-wide.
  int64_t max_load_failure_percent = 50;
};

// One judgement of a canary window, or of the rollout as a whole, with the
// figures that decided it.
struct CanaryVerdict {
  int64_t at = 0;            // unix seconds
  std::string outcome{};     // pass, fail, inconclusive, promoted, rolled-back
  int64_t window_start = 0;  // 0 for a verdict on the rollout as a whole
  int64_t window_end = 0;
  int64_t baseline_version = 0;
  int64_t baseline_requests = 0;
  int64_t baseline_failures = 0;
  double baseline_p99_ms = 0;
  int64_t canary_version = 0;
  int64_t canary_requests = 0;
  int64_t canary_failures = 0;
  double canary_p99_ms = 0;
  std::string reason{};
};

struct Rollout {
  RolloutStrategy strategy = RolloutStrategy::kAllAtOnce;
  int canary_percent = 0;              // canary: share of the matching devices first
  int64_t canary_healthy_seconds = 0;  // canary: healthy this long, then everyone
  // Devices refuse the model unless it carries a signature (model.sig),
  // even with no trust key of their own (docs/signing.md).
  bool require_signature = false;
  // Canary: promote on measured figures instead of canary_healthy_seconds.
  std::optional<CanaryAnalysis> analysis{};
};

// Most replicas a deployment may ask for per location.
inline constexpr int64_t kMaxReplicas = 1000;

struct DeploymentSpec {
  std::string name{};
  std::string reference{};  // HOST/REPO:TAG or HOST/REPO@sha256:...
  Selector selector{};
  Rollout rollout{};
  // Devices per matching location that serve the model; 0: every matching
  // device. The hub chooses which (FleetStore, docs/fleet.md "Placement").
  int64_t replicas = 0;
};

struct Revision {
  int64_t number = 0;
  std::string reference{};
  Selector selector{};
  Rollout rollout{};
  int64_t created_at = 0;
  bool rolled_back = false;
  // Unix seconds; 0 when not rolled back, or rolled back by a hub before
  // this field.
  int64_t rolled_back_at = 0;
  std::optional<int64_t> healthy_since{};  // canary: every canary device READY since
  bool promoted = false;                   // canary: the rest of the devices have it too
  int64_t replicas = 0;                    // as in DeploymentSpec
  std::vector<CanaryVerdict> verdicts{};   // canary analysis, oldest first
};

// Where a deployment with replicas runs in one location: the devices the
// hub placed it on, fewer than `replicas` when the location has fewer
// devices that can take it.
struct Placement {
  std::string location{};
  std::vector<std::string> devices{};  // ascending by name
  int64_t replicas = 0;
};

struct Deployment {
  std::string name{};
  std::vector<Revision> revisions{};  // ascending by number
  // For a current revision with replicas: one entry per location with a
  // device the selector matches, ascending by location. Empty otherwise.
  std::vector<Placement> placements{};

  // The newest revision not rolled back; null when every one was.
  const Revision* Current() const;
  // The revision before Current() that was not rolled back.
  const Revision* Previous() const;
};

struct DesiredModel {
  std::string deployment{};
  int64_t revision = 0;
  std::string reference{};
  bool require_signature = false;  // the revision's rollout.require_signature
};

// A warning for each location where the deployment runs on fewer devices
// than its replicas.
std::vector<std::string> PlacementWarnings(const Deployment& deployment);

// What one device should serve. The etag changes exactly when the models do.
struct DesiredState {
  std::vector<DesiredModel> models{};
  std::string etag{};
};

// Something the hub just made, with the secret that goes with it: the
// location's enrolment token, or the device's own token. Shown once; the hub
// keeps only a hash.
template <typename T>
struct WithToken {
  T value{};
  std::string token{};
};

// A deployment as created or updated, with what the hub noticed about it
// (a selector that matches no device yet).
struct DeployOutcome {
  Deployment deployment{};
  std::vector<std::string> warnings{};
};

// Network local: another device of a location, as the hub tells a device
// of the same location (GET /api/v1/devices/{name}/peers).
struct LocationPeer {
  std::string device{};
  std::string url{};                  // its advertised REST base URL
  std::string grpc_address{};         // its advertised gRPC HOST:PORT
  std::vector<std::string> models{};  // READY in its last heartbeat
  std::vector<std::string> blobs{};   // verified blob digests it holds
  int64_t last_seen = 0;
};

// A device's peers and the location's peer token, which the hub generates
// once per location and keeps.
struct LocationPeers {
  std::string location{};
  std::string peer_token{};
  std::vector<LocationPeer> peers{};
};

// One entry of the hub's event log (GET /api/v1/events): what happened to
// a device or a deployment, and when.
struct FleetEvent {
  // 0 when not known (a revocation or rollback recorded by a hub before
  // their times were kept).
  int64_t at = 0;
  // device-enrolled, device-revoked, deployed, promoted, rolled-back
  std::string kind{};
  std::string subject{};  // the device or deployment
  int64_t revision = 0;   // deployment events: the revision
  std::string detail{};   // location, reference, or the verdict that decided it
};

// Every device with the hub's clock, so that "last seen 40 s ago" is
// computed against the hub's time, not the caller's.
struct FleetStatus {
  int64_t now = 0;
  std::vector<Device> devices{};
};

}  // namespace perch
