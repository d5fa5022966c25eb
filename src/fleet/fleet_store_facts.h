// FleetStore, device facts: what each device said it is at enrolment, in a
// table of its own (a heartbeat's newer facts travel in the heartbeat's
// own column). Internal to the fleet_hub component.
//
// Threading: the caller holds FleetStore's mutex around every call.
#pragma once

#include <map>
#include <string>

#include "core/sqlite.h"
#include "core/status.h"
#include "fleet/device_facts.h"

namespace perch {

// Creates the table when the database was made before device facts.
Status CreateDeviceFactsTable(SqliteDb& db);
Status SaveDeviceFacts(SqliteDb& db, const std::string& device, const DeviceFacts& facts);
// Every device's enrolment facts by device name.
Result<std::map<std::string, DeviceFacts>> LoadDeviceFacts(SqliteDb& db);

}  // namespace perch
