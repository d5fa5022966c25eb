// FleetStore: the hub's record of locations, devices and deployments, and
// the rule that turns them into each device's desired state.
//
// Everything lives in memory for fast reads (10,000 devices heartbeating)
// and is written through to SQLite (WAL) in the hub's data folder before a
// call returns, so a hub killed at any point restarts with what it answered.
// Tokens (location enrolment tokens, device tokens) are stored only as
// SHA-256 hashes; the plain token is returned once, when it is made.
//
// Canary rollouts: a revision with strategy canary goes first to
// ceil(percent% of the matching devices) chosen by a stable hash of
// deployment and device name; the others keep the previous revision until
// every canary device has reported the new reference READY for
// canary_healthy_seconds, after which the revision is promoted to all.
//
// Placement (placement.h): a deployment whose current revision asks for
// replicas runs on that many devices per location, not on every matching
// one. Placements belong to the deployment, not to a revision, so a new
// revision, a rollback or a canary keeps the devices that still match; a
// canary's share is taken among the placed devices. A device holds its
// placements until it has been silent for `placement_grace` (a reboot does
// not move models); then its deployments are placed anew. The grace counts
// from the store's opening at the earliest, so a restarted hub does not
// shuffle models either. New placements go to devices heard from within
// the grace, including just enrolled ones. Placements are stored in the
// database like everything else; one that cannot be written is retried by
// the review, every `placement_review_interval`.
//
// SQLite's WAL checkpoints (which fsync) run on a background thread with a
// connection of their own, not inside a write under the mutex: at 1,000
// heartbeats/s an automatic checkpoint every ~0.5 s held every request up
// for the length of two fsyncs.
//
// Threading: every public method is thread-safe (one mutex); one background
// thread checkpoints the database every second, and another reviews the
// placements, until destruction.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

#include "core/clock.h"
#include "core/sqlite.h"
#include "core/status.h"
#include "fleet/fleet_types.h"

namespace perch {

struct FleetStoreOptions {
  std::filesystem::path database;  // e.g. DATA/fleet.db
  // Stamps enrolments, heartbeats and revisions and times canaries; tests
  // pass a ManualClock's.
  WallClock clock{};
  // How long a device may stay silent before its placements move to others.
  std::chrono::seconds placement_grace{300};
  // How often placements on devices gone past the grace are looked for.
  std::chrono::milliseconds placement_review_interval{1000};
  // Network local: a device heard from within this long is online, and so
  // listed to the other devices of its location as a peer.
  std::chrono::seconds peer_online_for{30};
  // The SQLite VFS to open the database through (tests: a fault-injecting
  // one); empty: SQLite's default.
  std::string vfs{};
};

// What FleetStore::Enrol answers: the device and its new token; `again`
// when the device was already enrolled (the same agent, by its key).
struct Enrolment : WithToken<Device> {
  bool again = false;
};

class FleetStore {
 public:
  // Unavailable when the database cannot be opened or read.
  static Result<std::unique_ptr<FleetStore>> Open(FleetStoreOptions options);
  ~FleetStore();
  FleetStore(const FleetStore&) = delete;
  FleetStore& operator=(const FleetStore&) = delete;

  // InvalidArgument for a bad name or label; AlreadyExists for a taken name.
  Result<WithToken<Location>> CreateLocation(const LocationSpec& spec);
  std::vector<Location> Locations() const;
  Result<Location> GetLocation(std::string_view name) const;
  // A new enrolment token for the location; the old one stops working.
  Result<std::string> RotateEnrolmentToken(std::string_view location);

  // Enrols a device into the location whose enrolment token this is
  // (fleet_store_enrol.cpp). Idempotent for an agent that sends an
  // enrolment key: a repeat with the name and key of an enrolled device (its
  // answer was lost, or its device.json) answers that device again with a
  // new device token, and the previous token stops working (only its hash
  // was kept, so it cannot be answered again). The repeat's labels, facts
  // and versions replace the device's; its enrolment time, heartbeat and
  // placements stay.
  // Unauthenticated for an unknown token; InvalidArgument for a bad name or
  // key; AlreadyExists, with what the operator can do, for a taken name
  // whose device has another key (or none, or the request has none), is
  // revoked, or belongs to another location.
  Result<Enrolment> Enrol(std::string_view enrolment_token, const DeviceSpec& spec);
  // The device a device token belongs to. Unauthenticated if unknown or
  // revoked.
  Result<Device> AuthenticateDevice(std::string_view device_token) const;
  // Ok, or why the store takes no more changes (a failed flush of its
  // database: the hub must be restarted).
  Status Health() const;
  Status RevokeDevice(std::string_view name);
  std::vector<Device> Devices() const;
  Result<Device> GetDevice(std::string_view name) const;
  // Stores the device's report, and advances canaries it completes.
  Status RecordHeartbeat(std::string_view device, Heartbeat heartbeat);

  // Creates the deployment, or adds a revision when it exists and
  // `create_only` is false (a revision equal to the current one is not
  // added again). InvalidArgument for a bad spec; AlreadyExists when
  // `create_only` and the name is taken.
  Result<Deployment> Deploy(const DeploymentSpec& spec, bool create_only);
  // Marks the current revision rolled back; the previous one is current
  // again. InvalidArgument when there is no previous revision.
  Result<Deployment> Rollback(std::string_view name);
  std::vector<Deployment> Deployments() const;
  Result<Deployment> GetDeployment(std::string_view name) const;
  // Devices (not revoked) the selector picks: a deployment that picks none
  // is accepted, and the API warns.
  size_t CountMatching(const Selector& selector) const;

  // Places anew the deployments that have a device gone past the grace (or
  // revoked, or no longer matching), and retries placements that could not
  // be stored. The store's own thread calls it every
  // placement_review_interval; tests call it after moving their clock.
  // Unavailable when a placement cannot be stored.
  Status ReviewPlacements();

  // What `device` should serve now. NotFound for an unknown device.
  Result<DesiredState> DesiredStateFor(std::string_view device) const;
  // Returns as soon as the device's desired state has an etag other than
  // `etag`, or after `timeout` with the current one (long poll).
  Result<DesiredState> WaitForDesiredState(std::string_view device, std::string_view etag,
                                           std::chrono::milliseconds timeout) const;

  // Canary analysis (canary_judge.h); fleet_store_canary.cpp.
  //
  // The current revision of `deployment` when it is a canary with an
  // analysis still running (not promoted, not rolled back), with its canary
  // devices; nullopt otherwise. NotFound for an unknown deployment.
  struct RunningCanary {
    Revision revision;
    std::vector<Device> devices;
  };
  Result<std::optional<RunningCanary>> RunningCanaryOf(std::string_view deployment) const;
  // Appends a verdict to revision `number` (the newest kMaxVerdicts kept),
  // and with outcome "promoted" promotes it or with "rolled-back" rolls it
  // back on every device. FailedPrecondition-like InvalidArgument when the
  // revision is no longer the running canary (an operator acted first).
  Status RecordVerdict(std::string_view deployment, int64_t number, const CanaryVerdict& verdict);
  static constexpr size_t kMaxVerdicts = 200;

  // The event log (fleet_store_events.cpp): devices enrolled and revoked,
  // revisions deployed, promoted and rolled back (with the verdict that
  // decided it), the newest `limit` first, from what the store keeps.
  std::vector<FleetEvent> Events(size_t limit) const;
  static constexpr size_t kMaxEvents = 500;  // most events one call returns

  // Network local: the other enrolled, non-revoked, online devices of
  // `device`'s location, with the location's peer token (generated on
  // first use and kept in the database; the devices need it in the clear).
  // NotFound for an unknown device; PermissionDenied for a revoked one.
  Result<LocationPeers> PeersOf(std::string_view device);

 private:
  struct DeviceRecord {
    Device device;
    std::string token_hash;
    std::string enrolment_key_hash{};  // empty: enrolled without a key
  };
  struct LocationRecord {
    Location location;
    std::string enrolment_hash;
  };

  FleetStore(FleetStoreOptions options, std::unique_ptr<SqliteDb> db,
             std::unique_ptr<SqliteDb> checkpoint_db);
  // SHA-256 of a token or key, hex: all the store keeps of a secret.
  static std::string TokenHash(std::string_view token);
  // A repeat enrolment of `record`'s name into `location`; requires mutex_.
  Result<Enrolment> EnrolAgain(DeviceRecord& record, const std::string& location,
                               const DeviceSpec& spec);
  void CheckpointLoop(std::stop_token stop);
  Status Load();
  Status SaveDevice(const DeviceRecord& record);
  Status SaveRevision(const std::string& deployment, const Revision& revision);
  // Flushes what was committed to the disk. Commits are not flushed one by
  // one (synchronous=NORMAL: heartbeats are many and repeated anyway); what
  // the hub acknowledges (an enrolment's token, a location, a deployment, a
  // revocation) is flushed before its answer, so that a power loss of the
  // hub cannot take back what it answered (docs/durability.md).
  Status FlushAcknowledged();
  Status LoadVerdicts();  // requires mutex_
  void PlacementLoop(std::stop_token stop);
  DesiredState ComputeDesiredState(const Device& device) const;  // requires mutex_
  // Placement, all requiring mutex_. A device is live when heard from (or
  // enrolled) within the grace; one that holds a placement counts the
  // store's opening as heard from too.
  bool Live(const Device& device, int64_t now, bool holds_placement) const;
  bool Placed(const std::string& deployment, const std::string& device) const;
  // Where the deployment should run now: empty unless its current revision
  // asks for replicas.
  std::set<std::string> ComputePlacement(const std::string& deployment, int64_t now) const;
  // Stores and applies ComputePlacement when it differs from the placement
  // held; on a failure to store, remembers the deployment for the review.
  Status Place(const std::string& deployment, int64_t now);
  // Places the deployments that `device` matches and that have fewer
  // devices than replicas in its location (the device just enrolled or
  // came back).
  void PlaceWhereShort(const Device& device, int64_t now);
  // `deployment` as the API shows it at `now`: promotions, placements.
  Deployment Describe(const Deployment& deployment, int64_t now) const;
  bool InCanary(const std::string& deployment, const Revision& revision,
                const Device& device) const;  // requires mutex_
  // The canary devices of a revision, computed once and kept until the
  // devices or deployments change: it hashes every matching device, too
  // much to repeat on every heartbeat and poll of a large fleet.
  struct Canaries {
    std::vector<const Device*> devices;        // ascending by hash, as chosen
    std::unordered_set<const Device*> lookup;  // the same, for InCanary
    // The canaries not reporting the revision's reference READY: filled by
    // the first AdvanceCanaries, then updated by each canary's heartbeat,
    // so a heartbeat does not re-read every canary's report.
    std::optional<std::unordered_set<const Device*>> not_ready;
  };
  Canaries& CanaryDevices(const std::string& deployment,
                          const Revision& revision) const;  // requires mutex_
  // After `reporter`'s heartbeat.
  Status AdvanceCanaries(int64_t now, const Device& reporter);  // requires mutex_
  void Changed();                                               // requires mutex_

  const FleetStoreOptions options_;

  mutable std::mutex mutex_;
  mutable std::condition_variable changed_;
  uint64_t generation_ = 0;                                          // guarded by mutex_
  std::unique_ptr<SqliteDb> db_;                                     // guarded by mutex_
  std::map<std::string, LocationRecord, std::less<>> locations_;     // guarded by mutex_
  std::map<std::string, DeviceRecord, std::less<>> devices_;         // guarded by mutex_
  std::map<std::string, std::string, std::less<>> device_by_token_;  // guarded by mutex_
  std::map<std::string, Deployment, std::less<>> deployments_;       // guarded by mutex_
  std::map<std::string, std::string, std::less<>> peer_tokens_;      // guarded by mutex_
  // Keyed by deployment and revision number; cleared by Changed(). Device
  // pointers point into devices_, whose nodes never move.
  mutable std::map<std::pair<std::string, int64_t>, Canaries> canaries_;  // guarded by mutex_
  // Deployment -> the devices it is placed on (deployments with replicas).
  std::map<std::string, std::set<std::string>, std::less<>> placements_;  // guarded by mutex_
  std::set<std::string> unsettled_;  // placements not stored yet; guarded by mutex_
  // Why checkpoints stopped: a failed flush of the log (SqliteDb::SyncWal),
  // after which nothing more is acknowledged. Guarded by mutex_.
  Status checkpoint_failure_;
  int64_t opened_at_ = 0;  // unix seconds

  // Used by checkpointer_ only; the thread is declared after them, so it
  // stops first.
  std::unique_ptr<SqliteDb> checkpoint_db_;
  std::mutex checkpoint_mutex_;
  std::condition_variable_any checkpoint_wake_;
  std::jthread checkpointer_;

  // Used by placer_ only; declared last, so the thread stops first.
  std::mutex placer_mutex_;
  std::condition_variable_any placer_wake_;
  std::jthread placer_;
};

}  // namespace perch
