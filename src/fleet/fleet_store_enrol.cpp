// FleetStore, enrolment: a new device, or the same agent enrolling again
// with its enrolment key (docs/fleet.md, "Enrolling again").
#include <algorithm>

#include "fleet/fleet_store.h"
#include "fleet/fleet_store_facts.h"
#include "store/access.h"

namespace perch {
namespace {

// The name is taken by a device this request cannot prove to be: say what
// the operator can do about it.
Status NameTaken(const std::string& name, std::string_view why) {
  return Status(StatusCode::kAlreadyExists,
                "a device named '" + name + "' is already enrolled" + std::string(why) +
                    ": if this is another device, give it another name (--device); if it "
                    "replaces '" +
                    name + "' (whose state folder was lost), revoke '" + name +
                    "' (perch devices revoke " + name + ") and enrol this one under a new name");
}

}  // namespace

Result<Enrolment> FleetStore::Enrol(std::string_view enrolment_token, const DeviceSpec& spec) {
  if (!IsValidFleetName(spec.name)) {
    return InvalidArgument("name: '" + spec.name.substr(0, 80) +
                           "' is not a valid device name: 1 to 64 of lowercase letters, "
                           "digits, '.', '_' and '-'");
  }
  if (!spec.enrolment_key.empty() && !IsValidEnrolmentKey(spec.enrolment_key)) {
    return InvalidArgument(std::string("enrolment_key: ") + kEnrolmentKeyRule);
  }
  const std::string hash = TokenHash(enrolment_token);
  std::lock_guard lock(mutex_);
  const auto location = std::find_if(locations_.begin(), locations_.end(), [&](const auto& entry) {
    return entry.second.enrolment_hash == hash;
  });
  if (location == locations_.end()) {
    return Status(StatusCode::kUnauthenticated,
                  "the enrolment token is not valid: ask the hub's admin for the location's "
                  "current token");
  }
  if (const auto existing = devices_.find(spec.name); existing != devices_.end()) {
    return EnrolAgain(existing->second, location->first, spec);
  }
  PERCH_ASSIGN_OR_RETURN(std::string token, GenerateToken());
  DeviceRecord record{
      .device = Device{.name = spec.name,
                       .location = location->first,
                       .labels = spec.labels,
                       .architecture = spec.architecture,
                       .perch_version = spec.perch_version,
                       .addresses = spec.addresses,
                       .enrolled_at = options_.clock.UnixSeconds(),
                       .facts = spec.facts},
      .token_hash = TokenHash(token),
      .enrolment_key_hash = spec.enrolment_key.empty() ? "" : TokenHash(spec.enrolment_key),
  };
  PERCH_RETURN_IF_ERROR(SaveDeviceFacts(*db_, spec.name, spec.facts));
  PERCH_RETURN_IF_ERROR(SaveDevice(record));
  PERCH_RETURN_IF_ERROR(FlushAcknowledged());
  device_by_token_[record.token_hash] = spec.name;
  devices_[spec.name] = record;
  Changed();
  PlaceWhereShort(devices_.at(spec.name).device, record.device.enrolled_at);
  Enrolment enrolment;
  enrolment.value = record.device;
  enrolment.token = std::move(token);
  return enrolment;
}

Result<Enrolment> FleetStore::EnrolAgain(DeviceRecord& record, const std::string& location,
                                         const DeviceSpec& spec) {
  // Without a key on both sides nothing tells the same agent from another
  // device given the same name: refused, as before enrolment keys.
  if (spec.enrolment_key.empty()) {
    return NameTaken(spec.name, "");
  }
  if (record.enrolment_key_hash.empty()) {
    return NameTaken(spec.name,
                     " by an agent that sent no enrolment key, so no agent can prove to be it");
  }
  if (record.enrolment_key_hash != TokenHash(spec.enrolment_key)) {
    return NameTaken(spec.name, " by another agent (its enrolment key is not this one's)");
  }
  if (record.device.revoked) {
    return Status(StatusCode::kAlreadyExists, "device '" + spec.name +
                                                  "' was revoked: enrol it again under a new name "
                                                  "(--device)");
  }
  if (record.device.location != location) {
    return Status(StatusCode::kAlreadyExists,
                  "device '" + spec.name + "' is enrolled in location '" + record.device.location +
                      "', and this enrolment token is of location '" + location +
                      "': give it the enrolment token of '" + record.device.location +
                      "', or enrol it under a new name (--device)");
  }
  // The hub keeps only the hash of the token it gave the first time, so
  // the repeat gets a new one, and the old one (lost with the answer, or
  // with device.json) stops working.
  PERCH_ASSIGN_OR_RETURN(std::string token, GenerateToken());
  DeviceRecord updated = record;
  updated.device.labels = spec.labels;
  updated.device.architecture = spec.architecture;
  updated.device.perch_version = spec.perch_version;
  updated.device.addresses = spec.addresses;
  updated.device.facts = spec.facts;
  updated.token_hash = TokenHash(token);
  PERCH_RETURN_IF_ERROR(SaveDeviceFacts(*db_, spec.name, spec.facts));
  PERCH_RETURN_IF_ERROR(SaveDevice(updated));
  PERCH_RETURN_IF_ERROR(FlushAcknowledged());
  device_by_token_.erase(record.token_hash);
  device_by_token_[updated.token_hash] = spec.name;
  record = std::move(updated);
  Changed();  // its labels may select other deployments now
  PlaceWhereShort(record.device, options_.clock.UnixSeconds());
  Enrolment enrolment;
  enrolment.value = record.device;
  enrolment.token = std::move(token);
  enrolment.again = true;
  return enrolment;
}

}  // namespace perch
