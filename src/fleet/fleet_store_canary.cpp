// FleetStore, canary analysis: what the judge needs to see of a running
// canary, and its verdicts, kept with the revision they judge.
#include <algorithm>

#include "fleet/fleet_json.h"
#include "fleet/fleet_store.h"

namespace perch {

Result<std::optional<FleetStore::RunningCanary>> FleetStore::RunningCanaryOf(
    std::string_view name) const {
  std::lock_guard lock(mutex_);
  const auto found = deployments_.find(name);
  if (found == deployments_.end()) {
    return NotFound("no deployment '" + std::string(name.substr(0, 80)) + "'");
  }
  const Revision* current = found->second.Current();
  if (current == nullptr || current->rollout.strategy != RolloutStrategy::kCanary ||
      !current->rollout.analysis || current->promoted) {
    return std::optional<RunningCanary>();
  }
  RunningCanary running{.revision = *current, .devices = {}};
  for (const Device* device : CanaryDevices(found->first, *current).devices) {
    running.devices.push_back(*device);
  }
  return std::optional<RunningCanary>(std::move(running));
}

Status FleetStore::RecordVerdict(std::string_view name, int64_t number,
                                 const CanaryVerdict& verdict) {
  std::lock_guard lock(mutex_);
  const auto found = deployments_.find(name);
  if (found == deployments_.end()) {
    return NotFound("no deployment '" + std::string(name.substr(0, 80)) + "'");
  }
  Deployment& deployment = found->second;
  const Revision* current = deployment.Current();
  if (current == nullptr || current->number != number || current->promoted) {
    return InvalidArgument("revision " + std::to_string(number) + " of deployment '" +
                           deployment.name + "' is no longer a running canary");
  }
  Revision updated = *current;
  updated.verdicts.push_back(verdict);
  if (updated.verdicts.size() > kMaxVerdicts) {
    updated.verdicts.erase(updated.verdicts.begin());
  }
  if (verdict.outcome == "promoted") {
    updated.promoted = true;
  } else if (verdict.outcome == "rolled-back") {
    updated.rolled_back = true;
    updated.rolled_back_at = verdict.at;
  }
  PERCH_ASSIGN_OR_RETURN(SqliteTransaction transaction, db_->Begin());
  PERCH_ASSIGN_OR_RETURN(
      SqliteStatement save,
      db_->Prepare("INSERT INTO canary_verdicts(deployment, number, seq, verdict) "
                   "VALUES (?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM canary_verdicts "
                   "WHERE deployment = ?1 AND number = ?2), ?)"));
  save.Bind(1, deployment.name).Bind(2, number).Bind(3, ToJson(verdict));
  PERCH_RETURN_IF_ERROR(save.Run("store a canary verdict"));
  PERCH_ASSIGN_OR_RETURN(
      SqliteStatement trim,
      db_->Prepare("DELETE FROM canary_verdicts WHERE deployment = ?1 AND number = ?2 AND seq <= "
                   "(SELECT MAX(seq) FROM canary_verdicts WHERE deployment = ?1 AND number = ?2) "
                   "- ?3"));
  trim.Bind(1, deployment.name).Bind(2, number).Bind(3, static_cast<int64_t>(kMaxVerdicts));
  PERCH_RETURN_IF_ERROR(trim.Run("drop old canary verdicts"));
  PERCH_RETURN_IF_ERROR(SaveRevision(deployment.name, updated));
  PERCH_RETURN_IF_ERROR(transaction.Commit());
  const bool changes_devices = updated.promoted || updated.rolled_back;
  for (Revision& revision : deployment.revisions) {
    if (revision.number == number) {
      revision = std::move(updated);
    }
  }
  if (changes_devices) {
    Changed();
    (void)Place(deployment.name, options_.clock.UnixSeconds());  // as in Rollback
  }
  return Status::Ok();
}

Status FleetStore::LoadVerdicts() {
  PERCH_ASSIGN_OR_RETURN(SqliteStatement read,
                         db_->Prepare("SELECT deployment, number, verdict FROM canary_verdicts "
                                      "ORDER BY deployment, number, seq"));
  while (read.Step()) {
    const auto deployment = deployments_.find(read.Text(0));
    if (deployment == deployments_.end()) {
      continue;
    }
    const int64_t number = read.Int(1);
    const auto revision =
        std::find_if(deployment->second.revisions.begin(), deployment->second.revisions.end(),
                     [&](const Revision& candidate) { return candidate.number == number; });
    auto parsed = ParseCanaryVerdict(read.Text(2));
    if (revision == deployment->second.revisions.end() || !parsed.ok()) {
      return Unavailable("the fleet database has a damaged canary verdict of deployment " +
                         deployment->first);
    }
    revision->verdicts.push_back(std::move(parsed).value());
  }
  return read.Finish("read the canary verdicts");
}

}  // namespace perch
