#include "fleet/fleet_store_facts.h"

namespace perch {

Status CreateDeviceFactsTable(SqliteDb& db) {
  return db.Exec(
      "CREATE TABLE IF NOT EXISTS device_facts(device TEXT PRIMARY KEY, facts TEXT NOT NULL)",
      "create the device facts table");
}

Status SaveDeviceFacts(SqliteDb& db, const std::string& device, const DeviceFacts& facts) {
  PERCH_ASSIGN_OR_RETURN(
      SqliteStatement save,
      db.Prepare("INSERT OR REPLACE INTO device_facts(device, facts) VALUES (?, ?)"));
  save.Bind(1, device).Bind(2, ToJson(facts));
  return save.Run("save the facts of device " + device);
}

Result<std::map<std::string, DeviceFacts>> LoadDeviceFacts(SqliteDb& db) {
  std::map<std::string, DeviceFacts> facts;
  PERCH_ASSIGN_OR_RETURN(SqliteStatement read,
                         db.Prepare("SELECT device, facts FROM device_facts"));
  while (read.Step()) {
    auto parsed = ParseDeviceFacts(read.Text(1));
    if (!parsed.ok()) {
      // Written by the hub only: a row that does not parse was edited.
      return Unavailable("the fleet database has damaged facts of device " + read.Text(0) + ": " +
                         parsed.status().message());
    }
    facts[read.Text(0)] = std::move(*parsed);
  }
  PERCH_RETURN_IF_ERROR(read.Finish("read the device facts"));
  return facts;
}

}  // namespace perch
