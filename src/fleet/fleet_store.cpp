#include "fleet/fleet_store.h"

#include <algorithm>
#include <array>

#include "fleet/fleet_json.h"
#include "fleet/fleet_store_facts.h"
#include "fleet/placement.h"
#include "store/access.h"
#include "store/digest.h"
#include "store/reference.h"

namespace perch {
namespace {

// A canary is promoted once its devices were healthy long enough. The flag is
// written at the heartbeat after that moment; what the hub says and serves
// goes by the moment itself, so the API never lags what the agents run.
// A canary with an analysis is promoted only by the analysis
// (CanaryJudge), which sets the flag.
bool PromotedAt(const Revision& revision, int64_t now) {
  if (revision.rollout.analysis) {
    return revision.promoted;
  }
  return revision.promoted ||
         (revision.healthy_since &&
          now - *revision.healthy_since >= revision.rollout.canary_healthy_seconds);
}

// `deployment` as of `now`: each revision's promotion as PromotedAt says.
Deployment AsOf(Deployment deployment, int64_t now) {
  for (Revision& revision : deployment.revisions) {
    revision.promoted = PromotedAt(revision, now);
  }
  return deployment;
}

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS locations(
  name TEXT PRIMARY KEY, description TEXT NOT NULL, labels TEXT NOT NULL,
  enrolment_hash TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS devices(
  name TEXT PRIMARY KEY, location TEXT NOT NULL, labels TEXT NOT NULL,
  architecture TEXT NOT NULL, perch_version TEXT NOT NULL, addresses TEXT NOT NULL,
  token_hash TEXT NOT NULL, enrolled_at INTEGER NOT NULL, last_seen INTEGER NOT NULL,
  revoked INTEGER NOT NULL, heartbeat TEXT, revoked_at INTEGER NOT NULL DEFAULT 0,
  enrolment_key_hash TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS revisions(
  deployment TEXT NOT NULL, number INTEGER NOT NULL, reference TEXT NOT NULL,
  selector TEXT NOT NULL, rollout TEXT NOT NULL, created_at INTEGER NOT NULL,
  rolled_back INTEGER NOT NULL, healthy_since INTEGER, promoted INTEGER NOT NULL,
  replicas INTEGER NOT NULL DEFAULT 0, rolled_back_at INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY(deployment, number));
CREATE TABLE IF NOT EXISTS placements(
  deployment TEXT NOT NULL, device TEXT NOT NULL, PRIMARY KEY(deployment, device));
CREATE TABLE IF NOT EXISTS location_peer_tokens(
  location TEXT PRIMARY KEY, token TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS canary_verdicts(
  deployment TEXT NOT NULL, number INTEGER NOT NULL, seq INTEGER NOT NULL,
  verdict TEXT NOT NULL, PRIMARY KEY(deployment, number, seq));
)sql";

// A database made before a column existed gets it, with its default:
// replicas (0, every matching device), revoked_at and rolled_back_at (0,
// not known), enrolment_key_hash ('', enrolled without a key).
Status AddColumn(SqliteDb& db, const std::string& table, const std::string& column,
                 const std::string& type = "INTEGER NOT NULL DEFAULT 0") {
  PERCH_ASSIGN_OR_RETURN(
      SqliteStatement columns,
      db.Prepare("SELECT 1 FROM pragma_table_info('" + table + "') WHERE name = '" + column + "'"));
  const bool present = columns.Step();
  PERCH_RETURN_IF_ERROR(columns.Finish("read the columns of the " + table));
  if (present) {
    return Status::Ok();
  }
  return db.Exec("ALTER TABLE " + table + " ADD COLUMN " + column + " " + type,
                 "add " + column + " to the " + table);
}

bool SameRevisionContent(const Revision& revision, const DeploymentSpec& spec) {
  return revision.reference == spec.reference && revision.replicas == spec.replicas &&
         ToJson(revision.selector) == ToJson(spec.selector) &&
         ToJson(revision.rollout) == ToJson(spec.rollout);
}

Status ValidateSpec(const DeploymentSpec& spec) {
  if (!IsValidFleetName(spec.name)) {
    return InvalidArgument("name: '" + spec.name.substr(0, 80) +
                           "' is not a valid deployment name: 1 to 64 of lowercase letters, "
                           "digits, '.', '_' and '-'");
  }
  if (spec.reference.empty() || spec.reference.size() > 1024) {
    return InvalidArgument("reference: a model reference HOST/REPO:TAG is required");
  }
  // A reference every agent would refuse must not reach the desired state:
  // it would be refused on every matching device (docs/fleet.md).
  if (const auto reference = Reference::Parse(spec.reference); !reference.ok()) {
    return InvalidArgument(
        "reference: '" + spec.reference.substr(0, 80) +
        "' is not a model reference HOST[:PORT]/REPOSITORY[:TAG][@sha256:...]: " +
        reference.status().message());
  }
  if (spec.rollout.strategy == RolloutStrategy::kCanary &&
      (spec.rollout.canary_percent < 1 || spec.rollout.canary_percent > 99)) {
    return InvalidArgument("rollout.canary_percent: must be between 1 and 99 for a canary");
  }
  if (spec.replicas < 0 || spec.replicas > kMaxReplicas) {
    return InvalidArgument("replicas: must be between 0 (every matching device) and " +
                           std::to_string(kMaxReplicas));
  }
  return Status::Ok();
}

}  // namespace

std::string FleetStore::TokenHash(std::string_view token) { return Sha256Of(token).str(); }

FleetStore::FleetStore(FleetStoreOptions options, std::unique_ptr<SqliteDb> db,
                       std::unique_ptr<SqliteDb> checkpoint_db)
    : options_(std::move(options)),
      db_(std::move(db)),
      opened_at_(options_.clock.UnixSeconds()),
      checkpoint_db_(std::move(checkpoint_db)),
      checkpointer_([this](std::stop_token stop) { CheckpointLoop(std::move(stop)); }),
      placer_([this](std::stop_token stop) { PlacementLoop(std::move(stop)); }) {}

void FleetStore::CheckpointLoop(std::stop_token stop) {
  std::unique_lock lock(checkpoint_mutex_);
  while (true) {
    // Returns early, and the loop ends, when the store is destroyed.
    checkpoint_wake_.wait_for(lock, stop, std::chrono::seconds(1), [] { return false; });
    if (stop.stop_requested()) {
      return;
    }
    // A failure (disk full) leaves the WAL to grow until the next attempt,
    // unless it was the log's flush: then nothing more is acknowledged.
    (void)checkpoint_db_->Checkpoint();
    if (!checkpoint_db_->failed_flush().ok()) {
      std::lock_guard store_lock(mutex_);
      checkpoint_failure_ = checkpoint_db_->failed_flush();
      return;
    }
  }
}

void FleetStore::PlacementLoop(std::stop_token stop) {
  std::unique_lock lock(placer_mutex_);
  while (true) {
    placer_wake_.wait_for(lock, stop, options_.placement_review_interval, [] { return false; });
    if (stop.stop_requested()) {
      return;
    }
    // A failure to store is retried at the next review; nothing else to do.
    (void)ReviewPlacements();
  }
}

FleetStore::~FleetStore() = default;

Result<std::unique_ptr<FleetStore>> FleetStore::Open(FleetStoreOptions options) {
  PERCH_ASSIGN_OR_RETURN(
      auto db, SqliteDb::Open({.path = options.database, .vfs = options.vfs, .schema = kSchema}));
  PERCH_RETURN_IF_ERROR(
      db->Exec("PRAGMA wal_autocheckpoint=0", "leave checkpoints to the background thread"));
  PERCH_RETURN_IF_ERROR(AddColumn(*db, "revisions", "replicas"));
  PERCH_RETURN_IF_ERROR(AddColumn(*db, "revisions", "rolled_back_at"));
  PERCH_RETURN_IF_ERROR(AddColumn(*db, "devices", "revoked_at"));
  PERCH_RETURN_IF_ERROR(
      AddColumn(*db, "devices", "enrolment_key_hash", "TEXT NOT NULL DEFAULT ''"));
  PERCH_RETURN_IF_ERROR(CreateDeviceFactsTable(*db));
  PERCH_ASSIGN_OR_RETURN(auto checkpoint_db,
                         SqliteDb::Open({.path = options.database, .vfs = options.vfs}));
  std::unique_ptr<FleetStore> store(
      new FleetStore(std::move(options), std::move(db), std::move(checkpoint_db)));
  PERCH_RETURN_IF_ERROR(store->Load());
  return store;
}

// Rows are written by this class only; one that does not parse means the
// file was edited or damaged, which the hub must not silently paper over.
template <typename T>
Status ReadColumn(Result<T> parsed, T& out, const std::string& what) {
  if (!parsed.ok()) {
    return Unavailable("the fleet database has a damaged " + what + ": " +
                       parsed.status().message());
  }
  out = std::move(parsed).value();
  return Status::Ok();
}

Status FleetStore::Load() {
  std::lock_guard lock(mutex_);
  PERCH_ASSIGN_OR_RETURN(
      SqliteStatement locations,
      db_->Prepare("SELECT name, description, labels, enrolment_hash, created_at "
                   "FROM locations"));
  while (locations.Step()) {
    LocationRecord record;
    record.location.name = locations.Text(0);
    record.location.description = locations.Text(1);
    PERCH_RETURN_IF_ERROR(ReadColumn(ParseLabels(locations.Text(2)), record.location.labels,
                                     "location " + record.location.name));
    record.enrolment_hash = locations.Text(3);
    record.location.created_at = locations.Int(4);
    locations_[record.location.name] = std::move(record);
  }
  PERCH_RETURN_IF_ERROR(locations.Finish("read the locations"));

  PERCH_ASSIGN_OR_RETURN(
      SqliteStatement devices,
      db_->Prepare("SELECT name, location, labels, architecture, perch_version, "
                   "addresses, token_hash, enrolled_at, last_seen, revoked, heartbeat, "
                   "revoked_at, enrolment_key_hash FROM devices"));
  while (devices.Step()) {
    DeviceRecord record;
    Device& device = record.device;
    device.name = devices.Text(0);
    device.location = devices.Text(1);
    const std::string what = "device " + device.name;
    PERCH_RETURN_IF_ERROR(ReadColumn(ParseLabels(devices.Text(2)), device.labels, what));
    device.architecture = devices.Text(3);
    device.perch_version = devices.Text(4);
    PERCH_RETURN_IF_ERROR(ReadColumn(ParseStrings(devices.Text(5)), device.addresses, what));
    record.token_hash = devices.Text(6);
    device.enrolled_at = devices.Int(7);
    device.last_seen = devices.Int(8);
    device.revoked = devices.Int(9) != 0;
    device.revoked_at = devices.Int(11);
    record.enrolment_key_hash = devices.Text(12);
    if (!devices.IsNull(10)) {
      Heartbeat heartbeat;
      PERCH_RETURN_IF_ERROR(ReadColumn(ParseHeartbeat(devices.Text(10)), heartbeat, what));
      device.heartbeat = std::move(heartbeat);
    }
    device_by_token_[record.token_hash] = device.name;
    devices_[device.name] = std::move(record);
  }
  PERCH_RETURN_IF_ERROR(devices.Finish("read the devices"));
  // A heartbeat's facts are newer than the enrolment's.
  PERCH_ASSIGN_OR_RETURN(const auto enrolment_facts, LoadDeviceFacts(*db_));
  for (auto& [name, record] : devices_) {
    Device& device = record.device;
    if (device.heartbeat && device.heartbeat->facts) {
      device.facts = *device.heartbeat->facts;
    } else if (const auto facts = enrolment_facts.find(name); facts != enrolment_facts.end()) {
      device.facts = facts->second;
    }
  }

  PERCH_ASSIGN_OR_RETURN(
      SqliteStatement revisions,
      db_->Prepare("SELECT deployment, number, reference, selector, rollout, "
                   "created_at, rolled_back, healthy_since, promoted, replicas, rolled_back_at "
                   "FROM revisions "
                   "ORDER BY deployment, number"));
  while (revisions.Step()) {
    const std::string name = revisions.Text(0);
    Revision revision;
    revision.number = revisions.Int(1);
    revision.reference = revisions.Text(2);
    const std::string what = "deployment " + name;
    PERCH_RETURN_IF_ERROR(ReadColumn(ParseSelector(revisions.Text(3)), revision.selector, what));
    PERCH_RETURN_IF_ERROR(ReadColumn(ParseRollout(revisions.Text(4)), revision.rollout, what));
    revision.created_at = revisions.Int(5);
    revision.rolled_back = revisions.Int(6) != 0;
    if (!revisions.IsNull(7)) {
      revision.healthy_since = revisions.Int(7);
    }
    revision.promoted = revisions.Int(8) != 0;
    revision.replicas = revisions.Int(9);
    revision.rolled_back_at = revisions.Int(10);
    Deployment& deployment = deployments_[name];
    deployment.name = name;
    deployment.revisions.push_back(std::move(revision));
  }
  PERCH_RETURN_IF_ERROR(revisions.Finish("read the deployments"));
  PERCH_RETURN_IF_ERROR(LoadVerdicts());

  PERCH_ASSIGN_OR_RETURN(SqliteStatement placements,
                         db_->Prepare("SELECT deployment, device FROM placements"));
  while (placements.Step()) {
    placements_[placements.Text(0)].insert(placements.Text(1));
  }
  return placements.Finish("read the placements");
}

Status FleetStore::SaveDevice(const DeviceRecord& record) {
  const Device& device = record.device;
  PERCH_ASSIGN_OR_RETURN(
      SqliteStatement save,
      db_->Prepare("INSERT OR REPLACE INTO devices(name, location, labels, architecture, "
                   "perch_version, addresses, token_hash, enrolled_at, last_seen, revoked, "
                   "heartbeat, revoked_at, enrolment_key_hash) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"));
  save.Bind(1, device.name)
      .Bind(2, device.location)
      .Bind(3, ToJson(device.labels))
      .Bind(4, device.architecture)
      .Bind(5, device.perch_version)
      .Bind(6, ToJson(device.addresses))
      .Bind(7, record.token_hash)
      .Bind(8, device.enrolled_at)
      .Bind(9, device.last_seen)
      .Bind(10, int64_t{device.revoked ? 1 : 0})
      .Bind(12, device.revoked_at)
      .Bind(13, record.enrolment_key_hash);
  if (device.heartbeat) {
    save.Bind(11, ToJson(*device.heartbeat));
  } else {
    save.BindNull(11);
  }
  return save.Run("save device " + device.name);
}

Status FleetStore::SaveRevision(const std::string& deployment, const Revision& revision) {
  PERCH_ASSIGN_OR_RETURN(
      SqliteStatement save,
      db_->Prepare("INSERT OR REPLACE INTO revisions(deployment, number, reference, selector, "
                   "rollout, created_at, rolled_back, healthy_since, promoted, replicas, "
                   "rolled_back_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"));
  save.Bind(1, deployment)
      .Bind(2, revision.number)
      .Bind(3, revision.reference)
      .Bind(4, ToJson(revision.selector))
      .Bind(5, ToJson(revision.rollout))
      .Bind(6, revision.created_at)
      .Bind(7, int64_t{revision.rolled_back ? 1 : 0});
  if (revision.healthy_since) {
    save.Bind(8, *revision.healthy_since);
  } else {
    save.BindNull(8);
  }
  save.Bind(9, int64_t{revision.promoted ? 1 : 0})
      .Bind(10, revision.replicas)
      .Bind(11, revision.rolled_back_at);
  return save.Run("save deployment " + deployment);
}

Status FleetStore::Health() const {
  std::lock_guard lock(mutex_);
  PERCH_RETURN_IF_ERROR(checkpoint_failure_);
  return db_->failed_flush();
}

Status FleetStore::FlushAcknowledged() {
  PERCH_RETURN_IF_ERROR(checkpoint_failure_);
  return db_->SyncWal();
}

void FleetStore::Changed() {
  // Enrolments, revocations, deployments and rollbacks are what decide who
  // is a canary; a promotion does not, but is rare enough not to matter.
  canaries_.clear();
  ++generation_;
  changed_.notify_all();
}

Result<WithToken<Location>> FleetStore::CreateLocation(const LocationSpec& spec) {
  if (!IsValidFleetName(spec.name)) {
    return InvalidArgument("name: '" + spec.name.substr(0, 80) +
                           "' is not a valid location name: 1 to 64 of lowercase letters, "
                           "digits, '.', '_' and '-'");
  }
  std::lock_guard lock(mutex_);
  if (locations_.contains(spec.name)) {
    return Status(StatusCode::kAlreadyExists, "location '" + spec.name + "' already exists");
  }
  LocationRecord record{
      .location = Location{.name = spec.name,
                           .description = spec.description,
                           .labels = spec.labels,
                           .created_at = options_.clock.UnixSeconds()},
      .enrolment_hash = {},
  };
  PERCH_ASSIGN_OR_RETURN(std::string token, GenerateToken());
  record.enrolment_hash = TokenHash(token);
  PERCH_ASSIGN_OR_RETURN(
      SqliteStatement save,
      db_->Prepare("INSERT INTO locations(name, description, labels, enrolment_hash, "
                   "created_at) VALUES (?, ?, ?, ?, ?)"));
  save.Bind(1, spec.name)
      .Bind(2, spec.description)
      .Bind(3, ToJson(spec.labels))
      .Bind(4, record.enrolment_hash)
      .Bind(5, record.location.created_at);
  PERCH_RETURN_IF_ERROR(save.Run("save location " + spec.name));
  PERCH_RETURN_IF_ERROR(FlushAcknowledged());
  locations_[spec.name] = record;
  return WithToken<Location>{record.location, std::move(token)};
}

std::vector<Location> FleetStore::Locations() const {
  std::lock_guard lock(mutex_);
  std::vector<Location> locations;
  for (const auto& [name, record] : locations_) {
    locations.push_back(record.location);
  }
  return locations;
}

Result<Location> FleetStore::GetLocation(std::string_view name) const {
  std::lock_guard lock(mutex_);
  const auto it = locations_.find(name);
  if (it == locations_.end()) {
    return NotFound("no location '" + std::string(name.substr(0, 80)) + "'");
  }
  return it->second.location;
}

Result<std::string> FleetStore::RotateEnrolmentToken(std::string_view location) {
  std::lock_guard lock(mutex_);
  const auto it = locations_.find(location);
  if (it == locations_.end()) {
    return NotFound("no location '" + std::string(location.substr(0, 80)) + "'");
  }
  PERCH_ASSIGN_OR_RETURN(std::string token, GenerateToken());
  const std::string hash = TokenHash(token);
  PERCH_ASSIGN_OR_RETURN(SqliteStatement save,
                         db_->Prepare("UPDATE locations SET enrolment_hash = ? WHERE name = ?"));
  save.Bind(1, hash).Bind(2, it->first);
  PERCH_RETURN_IF_ERROR(save.Run("save location " + it->first));
  PERCH_RETURN_IF_ERROR(FlushAcknowledged());
  it->second.enrolment_hash = hash;
  return token;
}

Result<Device> FleetStore::AuthenticateDevice(std::string_view device_token) const {
  std::lock_guard lock(mutex_);
  const auto it = device_by_token_.find(TokenHash(device_token));
  if (it == device_by_token_.end()) {
    return Status(StatusCode::kUnauthenticated, "the device token is not valid");
  }
  const Device& device = devices_.at(it->second).device;
  if (device.revoked) {
    return Status(StatusCode::kUnauthenticated,
                  "device '" + device.name + "' was revoked: enrol it again under a new name");
  }
  return device;
}

Status FleetStore::RevokeDevice(std::string_view name) {
  std::lock_guard lock(mutex_);
  const auto it = devices_.find(name);
  if (it == devices_.end()) {
    return NotFound("no device '" + std::string(name.substr(0, 80)) + "'");
  }
  DeviceRecord record = it->second;
  if (!record.device.revoked) {
    record.device.revoked_at = options_.clock.UnixSeconds();
  }
  record.device.revoked = true;
  PERCH_RETURN_IF_ERROR(SaveDevice(record));
  PERCH_RETURN_IF_ERROR(FlushAcknowledged());
  it->second = std::move(record);
  Changed();
  const int64_t now = options_.clock.UnixSeconds();
  std::vector<std::string> holding;
  for (const auto& [deployment, devices] : placements_) {
    if (devices.contains(it->first)) {
      holding.push_back(deployment);
    }
  }
  for (const std::string& deployment : holding) {
    // A placement not stored is retried by the review; the revocation stands.
    (void)Place(deployment, now);
  }
  return Status::Ok();
}

std::vector<Device> FleetStore::Devices() const {
  std::lock_guard lock(mutex_);
  std::vector<Device> devices;
  for (const auto& [name, record] : devices_) {
    devices.push_back(record.device);
  }
  return devices;
}

Result<Device> FleetStore::GetDevice(std::string_view name) const {
  std::lock_guard lock(mutex_);
  const auto it = devices_.find(name);
  if (it == devices_.end()) {
    return NotFound("no device '" + std::string(name.substr(0, 80)) + "'");
  }
  return it->second.device;
}

Status FleetStore::RecordHeartbeat(std::string_view name, Heartbeat heartbeat) {
  std::lock_guard lock(mutex_);
  const auto it = devices_.find(name);
  if (it == devices_.end()) {
    return NotFound("no device '" + std::string(name.substr(0, 80)) + "'");
  }
  Device& device = it->second.device;
  const int64_t now = options_.clock.UnixSeconds();
  // Written first, applied to memory only once stored.
  PERCH_ASSIGN_OR_RETURN(
      SqliteStatement save,
      db_->Prepare("UPDATE devices SET last_seen = ?, heartbeat = ? WHERE name = ?"));
  save.Bind(1, now).Bind(2, ToJson(heartbeat)).Bind(3, device.name);
  PERCH_RETURN_IF_ERROR(save.Run("save the heartbeat of " + device.name));
  const bool was_live = Live(device, now, false);
  device.last_seen = now;
  if (heartbeat.facts) {
    device.facts = *heartbeat.facts;
  }
  device.heartbeat = std::move(heartbeat);
  if (!was_live && !device.revoked) {
    PlaceWhereShort(device, now);
  }
  return AdvanceCanaries(now, device);
}

FleetStore::Canaries& FleetStore::CanaryDevices(const std::string& deployment,
                                                const Revision& revision) const {
  const auto key = std::make_pair(deployment, revision.number);
  if (const auto cached = canaries_.find(key); cached != canaries_.end()) {
    return cached->second;
  }
  std::vector<std::pair<std::string, const Device*>> ranked;
  for (const auto& [name, record] : devices_) {
    if (!record.device.revoked && revision.selector.Matches(record.device) &&
        (revision.replicas == 0 || Placed(deployment, name))) {
      ranked.emplace_back(Sha256Of(deployment + "/" + name).str(), &record.device);
    }
  }
  std::sort(ranked.begin(), ranked.end());
  const size_t count = std::max<size_t>(
      1, (ranked.size() * static_cast<size_t>(revision.rollout.canary_percent) + 99) / 100);
  Canaries canaries;
  for (size_t i = 0; i < ranked.size() && i < count; ++i) {
    canaries.devices.push_back(ranked[i].second);
    canaries.lookup.insert(ranked[i].second);
  }
  return canaries_[key] = std::move(canaries);
}

bool FleetStore::InCanary(const std::string& deployment, const Revision& revision,
                          const Device& device) const {
  return CanaryDevices(deployment, revision).lookup.contains(&device);
}

Status FleetStore::AdvanceCanaries(int64_t now, const Device& reporter) {
  for (auto& [name, deployment] : deployments_) {
    const Revision* found = deployment.Current();
    if (found == nullptr || found->rollout.strategy != RolloutStrategy::kCanary ||
        found->promoted) {
      continue;
    }
    Revision& current =
        *std::find_if(deployment.revisions.begin(), deployment.revisions.end(),
                      [&](const Revision& revision) { return revision.number == found->number; });
    const auto ready = [&](const Device& device) {
      return device.heartbeat &&
             std::any_of(device.heartbeat->models.begin(), device.heartbeat->models.end(),
                         [&](const ModelReport& model) {
                           return model.reference == current.reference && model.state == "READY";
                         });
    };
    Canaries& canaries = CanaryDevices(name, current);
    if (!canaries.not_ready) {
      canaries.not_ready.emplace();
      for (const Device* device : canaries.devices) {
        if (!ready(*device)) {
          canaries.not_ready->insert(device);
        }
      }
    } else if (canaries.lookup.contains(&reporter)) {
      if (ready(reporter)) {
        canaries.not_ready->erase(&reporter);
      } else {
        canaries.not_ready->insert(&reporter);
      }
    }
    const bool all_ready = canaries.not_ready->empty();
    Revision updated = current;
    if (!all_ready) {
      updated.healthy_since.reset();
    } else if (!updated.healthy_since) {
      updated.healthy_since = now;
    }
    if (updated.healthy_since && !updated.rollout.analysis &&
        now - *updated.healthy_since >= updated.rollout.canary_healthy_seconds) {
      updated.promoted = true;
    }
    if (updated.healthy_since != current.healthy_since || updated.promoted != current.promoted) {
      PERCH_RETURN_IF_ERROR(SaveRevision(name, updated));
      const bool promoted = updated.promoted;
      current = std::move(updated);
      if (promoted) {
        Changed();
      }
    }
  }
  return Status::Ok();
}

Result<Deployment> FleetStore::Deploy(const DeploymentSpec& spec, bool create_only) {
  PERCH_RETURN_IF_ERROR(ValidateSpec(spec));
  std::lock_guard lock(mutex_);
  const auto it = deployments_.find(spec.name);
  if (it != deployments_.end() && create_only) {
    return Status(StatusCode::kAlreadyExists, "deployment '" + spec.name + "' already exists");
  }
  Deployment deployment =
      it != deployments_.end() ? it->second : Deployment{.name = spec.name, .revisions = {}};
  const Revision* current = deployment.Current();
  if (current != nullptr && SameRevisionContent(*current, spec)) {
    return Describe(deployment, options_.clock.UnixSeconds());
  }
  Revision revision{
      .number = deployment.revisions.empty() ? 1 : deployment.revisions.back().number + 1,
      .reference = spec.reference,
      .selector = spec.selector,
      .rollout = spec.rollout,
      .created_at = options_.clock.UnixSeconds(),
  };
  // A canary with no earlier revision has nothing to hold the rest back
  // with: everyone gets it at once.
  revision.promoted = spec.rollout.strategy != RolloutStrategy::kCanary || current == nullptr;
  revision.replicas = spec.replicas;
  PERCH_RETURN_IF_ERROR(SaveRevision(spec.name, revision));
  PERCH_RETURN_IF_ERROR(FlushAcknowledged());
  deployment.revisions.push_back(std::move(revision));
  deployments_[spec.name] = deployment;
  Changed();
  const int64_t now = options_.clock.UnixSeconds();
  // A placement not stored is retried by the review within a second; the
  // revision stands either way.
  (void)Place(spec.name, now);
  return Describe(deployments_.at(spec.name), now);
}

Result<Deployment> FleetStore::Rollback(std::string_view name) {
  std::lock_guard lock(mutex_);
  const auto it = deployments_.find(name);
  if (it == deployments_.end()) {
    return NotFound("no deployment '" + std::string(name.substr(0, 80)) + "'");
  }
  Deployment& deployment = it->second;
  if (deployment.Previous() == nullptr) {
    return InvalidArgument("deployment '" + deployment.name +
                           "' has no earlier revision to roll back to");
  }
  Revision rolled_back = *deployment.Current();
  rolled_back.rolled_back = true;
  rolled_back.rolled_back_at = options_.clock.UnixSeconds();
  PERCH_RETURN_IF_ERROR(SaveRevision(deployment.name, rolled_back));
  PERCH_RETURN_IF_ERROR(FlushAcknowledged());
  for (Revision& revision : deployment.revisions) {
    if (revision.number == rolled_back.number) {
      revision = rolled_back;
    }
  }
  Changed();
  const int64_t now = options_.clock.UnixSeconds();
  (void)Place(deployment.name, now);  // as in Deploy
  return Describe(deployment, now);
}

std::vector<Deployment> FleetStore::Deployments() const {
  std::lock_guard lock(mutex_);
  const int64_t now = options_.clock.UnixSeconds();
  std::vector<Deployment> deployments;
  for (const auto& [name, deployment] : deployments_) {
    deployments.push_back(Describe(deployment, now));
  }
  return deployments;
}

Result<Deployment> FleetStore::GetDeployment(std::string_view name) const {
  std::lock_guard lock(mutex_);
  const auto it = deployments_.find(name);
  if (it == deployments_.end()) {
    return NotFound("no deployment '" + std::string(name.substr(0, 80)) + "'");
  }
  return Describe(it->second, options_.clock.UnixSeconds());
}

size_t FleetStore::CountMatching(const Selector& selector) const {
  std::lock_guard lock(mutex_);
  return static_cast<size_t>(
      std::count_if(devices_.begin(), devices_.end(), [&](const auto& entry) {
        return !entry.second.device.revoked && selector.Matches(entry.second.device);
      }));
}

DesiredState FleetStore::ComputeDesiredState(const Device& device) const {
  DesiredState state;
  const int64_t now = options_.clock.UnixSeconds();
  for (const auto& [name, deployment] : deployments_) {
    const Revision* current = deployment.Current();
    if (current == nullptr || !current->selector.Matches(device) ||
        (current->replicas > 0 && !Placed(name, device.name))) {
      continue;
    }
    const Revision* chosen = current;
    if (!PromotedAt(*current, now) && !InCanary(name, *current, device)) {
      chosen = deployment.Previous();
      if (chosen != nullptr && !chosen->selector.Matches(device)) {
        chosen = nullptr;
      }
    }
    if (chosen != nullptr) {
      state.models.push_back(DesiredModel{.deployment = name,
                                          .revision = chosen->number,
                                          .reference = chosen->reference,
                                          .require_signature = chosen->rollout.require_signature});
    }
  }
  DesiredState without_etag = state;
  state.etag = std::string(Sha256Of(ToJson(without_etag)).hex().substr(0, 16));
  return state;
}

Result<DesiredState> FleetStore::DesiredStateFor(std::string_view name) const {
  std::lock_guard lock(mutex_);
  const auto it = devices_.find(name);
  if (it == devices_.end()) {
    return NotFound("no device '" + std::string(name.substr(0, 80)) + "'");
  }
  return ComputeDesiredState(it->second.device);
}

Result<DesiredState> FleetStore::WaitForDesiredState(std::string_view name, std::string_view etag,
                                                     std::chrono::milliseconds timeout) const {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::unique_lock lock(mutex_);
  while (true) {
    const auto it = devices_.find(name);
    if (it == devices_.end()) {
      return NotFound("no device '" + std::string(name.substr(0, 80)) + "'");
    }
    DesiredState state = ComputeDesiredState(it->second.device);
    if (state.etag != etag) {
      return state;
    }
    const uint64_t seen = generation_;
    if (!changed_.wait_until(lock, deadline, [&] { return generation_ != seen; })) {
      return state;
    }
  }
}

bool FleetStore::Live(const Device& device, int64_t now, bool holds_placement) const {
  int64_t heard = std::max(device.last_seen, device.enrolled_at);
  if (holds_placement) {
    heard = std::max(heard, opened_at_);
  }
  return now - heard <= options_.placement_grace.count();
}

bool FleetStore::Placed(const std::string& deployment, const std::string& device) const {
  const auto it = placements_.find(deployment);
  return it != placements_.end() && it->second.contains(device);
}

std::set<std::string> FleetStore::ComputePlacement(const std::string& name, int64_t now) const {
  const auto found = deployments_.find(name);
  const Revision* current = found == deployments_.end() ? nullptr : found->second.Current();
  if (current == nullptr || current->replicas == 0) {
    return {};
  }
  std::map<std::string, size_t, std::less<>> counts;
  for (const auto& [deployment, devices] : placements_) {
    if (deployment != name) {
      for (const std::string& device : devices) {
        ++counts[device];
      }
    }
  }
  std::vector<PlacementCandidate> candidates;
  for (const auto& [device_name, record] : devices_) {
    const Device& device = record.device;
    if (device.revoked || !current->selector.Matches(device)) {
      continue;
    }
    const bool placed = Placed(name, device_name);
    const auto count = counts.find(device_name);
    candidates.push_back(PlacementCandidate{
        .name = device_name,
        .location = device.location,
        .live = Live(device, now, placed),
        .placed = placed,
        .placements = count == counts.end() ? 0 : count->second,
        .memory_available_bytes = device.heartbeat ? device.heartbeat->memory_available_bytes : 0,
        .load = device.heartbeat ? device.heartbeat->load : 0,
    });
  }
  const std::vector<std::string> placed = PlaceReplicas(candidates, current->replicas);
  return {placed.begin(), placed.end()};
}

Status FleetStore::Place(const std::string& name, int64_t now) {
  std::set<std::string> wanted = ComputePlacement(name, now);
  const auto held = placements_.find(name);
  if (held == placements_.end() ? wanted.empty() : held->second == wanted) {
    unsettled_.erase(name);
    return Status::Ok();
  }
  Status saved = [&]() -> Status {
    PERCH_ASSIGN_OR_RETURN(SqliteTransaction transaction, db_->Begin());
    PERCH_ASSIGN_OR_RETURN(SqliteStatement clear,
                           db_->Prepare("DELETE FROM placements WHERE deployment = ?"));
    clear.Bind(1, name);
    PERCH_RETURN_IF_ERROR(clear.Run("clear the placement of " + name));
    for (const std::string& device : wanted) {
      PERCH_ASSIGN_OR_RETURN(
          SqliteStatement save,
          db_->Prepare("INSERT INTO placements(deployment, device) VALUES (?, ?)"));
      save.Bind(1, name).Bind(2, device);
      PERCH_RETURN_IF_ERROR(save.Run("save the placement of " + name));
    }
    return transaction.Commit();
  }();
  if (!saved.ok()) {
    unsettled_.insert(name);
    return saved;
  }
  unsettled_.erase(name);
  if (wanted.empty()) {
    placements_.erase(name);
  } else {
    placements_[name] = std::move(wanted);
  }
  Changed();
  return Status::Ok();
}

void FleetStore::PlaceWhereShort(const Device& device, int64_t now) {
  for (const auto& [name, deployment] : deployments_) {
    const Revision* current = deployment.Current();
    if (current == nullptr || current->replicas == 0 || !current->selector.Matches(device) ||
        Placed(name, device.name)) {
      continue;
    }
    int64_t here = 0;
    if (const auto held = placements_.find(name); held != placements_.end()) {
      for (const std::string& placed : held->second) {
        const auto record = devices_.find(placed);
        if (record != devices_.end() && record->second.device.location == device.location) {
          ++here;
        }
      }
    }
    if (here < current->replicas) {
      // A placement not stored is retried by the review.
      (void)Place(name, now);
    }
  }
}

Status FleetStore::ReviewPlacements() {
  std::lock_guard lock(mutex_);
  const int64_t now = options_.clock.UnixSeconds();
  std::set<std::string> stale = unsettled_;
  for (const auto& [name, devices] : placements_) {
    const auto deployment = deployments_.find(name);
    const Revision* current =
        deployment == deployments_.end() ? nullptr : deployment->second.Current();
    for (const std::string& device_name : devices) {
      const auto record = devices_.find(device_name);
      if (current == nullptr || record == devices_.end() || record->second.device.revoked ||
          !current->selector.Matches(record->second.device) ||
          !Live(record->second.device, now, true)) {
        stale.insert(name);
        break;
      }
    }
  }
  Status outcome;
  for (const std::string& name : stale) {
    if (Status placed = Place(name, now); !placed.ok() && outcome.ok()) {
      outcome = std::move(placed);
    }
  }
  return outcome;
}

Deployment FleetStore::Describe(const Deployment& deployment, int64_t now) const {
  Deployment described = AsOf(deployment, now);
  const Revision* current = described.Current();
  if (current == nullptr || current->replicas == 0) {
    return described;
  }
  std::map<std::string, Placement> by_location;
  for (const auto& [name, record] : devices_) {
    const Device& device = record.device;
    if (device.revoked || !current->selector.Matches(device)) {
      continue;
    }
    Placement& placement = by_location[device.location];
    placement.location = device.location;
    placement.replicas = current->replicas;
    if (Placed(deployment.name, name)) {
      placement.devices.push_back(name);  // devices_ is ordered: ascending
    }
  }
  for (auto& [location, placement] : by_location) {
    described.placements.push_back(std::move(placement));
  }
  return described;
}

}  // namespace perch
