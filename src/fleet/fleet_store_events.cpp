// FleetStore, the event log: derived from the devices and revisions the
// store keeps (their enrolment, revocation, creation, promotion and
// rollback times), so it needs no table of its own and is never out of
// step with them.
#include <algorithm>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "fleet/fleet_store.h"

namespace perch {
namespace {

std::string RevisionDetail(const Revision& revision) {
  std::string detail = revision.reference;
  if (revision.rollout.strategy == RolloutStrategy::kCanary) {
    detail += ", canary " + std::to_string(revision.rollout.canary_percent) + "%";
    if (revision.rollout.analysis) {
      detail += " with analysis";
    }
  }
  return detail;
}

// The verdict with `outcome` that decided the revision, if the analysis did.
const CanaryVerdict* Decided(const Revision& revision, std::string_view outcome) {
  const auto found =
      std::find_if(revision.verdicts.rbegin(), revision.verdicts.rend(),
                   [&](const CanaryVerdict& verdict) { return verdict.outcome == outcome; });
  return found == revision.verdicts.rend() ? nullptr : &*found;
}

}  // namespace

std::vector<FleetEvent> FleetStore::Events(size_t limit) const {
  limit = std::min(limit, kMaxEvents);
  std::vector<FleetEvent> events;
  std::lock_guard lock(mutex_);
  for (const auto& [name, record] : devices_) {
    const Device& device = record.device;
    events.push_back({.at = device.enrolled_at,
                      .kind = "device-enrolled",
                      .subject = name,
                      .detail = "location " + device.location});
    if (device.revoked) {
      events.push_back({.at = device.revoked_at,
                        .kind = "device-revoked",
                        .subject = name,
                        .detail = "location " + device.location});
    }
  }
  for (const auto& [name, deployment] : deployments_) {
    for (const Revision& revision : deployment.revisions) {
      events.push_back({.at = revision.created_at,
                        .kind = "deployed",
                        .subject = name,
                        .revision = revision.number,
                        .detail = RevisionDetail(revision)});
      if (const CanaryVerdict* promoted = Decided(revision, "promoted")) {
        events.push_back({.at = promoted->at,
                          .kind = "promoted",
                          .subject = name,
                          .revision = revision.number,
                          .detail = promoted->reason});
      } else if (revision.promoted && revision.healthy_since) {
        events.push_back({.at = *revision.healthy_since + revision.rollout.canary_healthy_seconds,
                          .kind = "promoted",
                          .subject = name,
                          .revision = revision.number,
                          .detail = "every canary device healthy for " +
                                    std::to_string(revision.rollout.canary_healthy_seconds) +
                                    " s"});
      }
      if (revision.rolled_back) {
        const CanaryVerdict* verdict = Decided(revision, "rolled-back");
        events.push_back({.at = revision.rolled_back_at != 0 || verdict == nullptr
                                    ? revision.rolled_back_at
                                    : verdict->at,
                          .kind = "rolled-back",
                          .subject = name,
                          .revision = revision.number,
                          .detail = verdict != nullptr ? verdict->reason : "by an operator"});
      }
    }
  }
  // Newest first; among events of one second, the later kind of a subject's
  // life (a rollback after its deployment) first.
  const auto rank = [](const std::string& kind) {
    return kind == "device-enrolled" || kind == "deployed" ? 0 : 1;
  };
  std::sort(events.begin(), events.end(), [&](const FleetEvent& a, const FleetEvent& b) {
    return std::tuple(a.at, a.revision, rank(a.kind)) > std::tuple(b.at, b.revision, rank(b.kind));
  });
  if (events.size() > limit) {
    events.resize(limit);
  }
  return events;
}

}  // namespace perch
