// FleetStore, network local: each device's peers (the other online devices
// of its location) and the location's peer token.
#include "fleet/fleet_store.h"
#include "store/access.h"

namespace perch {

Result<LocationPeers> FleetStore::PeersOf(std::string_view name) {
  std::lock_guard lock(mutex_);
  const auto found = devices_.find(name);
  if (found == devices_.end()) {
    return NotFound("no device '" + std::string(name.substr(0, 80)) + "'");
  }
  const Device& self = found->second.device;
  if (self.revoked) {
    return Status(StatusCode::kPermissionDenied, "device '" + self.name + "' is revoked");
  }
  LocationPeers answer{.location = self.location, .peer_token = {}, .peers = {}};
  auto token = peer_tokens_.find(self.location);
  if (token == peer_tokens_.end()) {
    PERCH_ASSIGN_OR_RETURN(
        SqliteStatement read,
        db_->Prepare("SELECT token FROM location_peer_tokens WHERE location = ?"));
    read.Bind(1, self.location);
    std::string value = read.Step() ? read.Text(0) : std::string();
    PERCH_RETURN_IF_ERROR(read.Finish("read the peer token of " + self.location));
    if (value.empty()) {
      PERCH_ASSIGN_OR_RETURN(value, GenerateToken());
      PERCH_ASSIGN_OR_RETURN(
          SqliteStatement save,
          db_->Prepare("INSERT INTO location_peer_tokens(location, token) VALUES (?, ?)"));
      save.Bind(1, self.location).Bind(2, value);
      PERCH_RETURN_IF_ERROR(save.Run("save the peer token of " + self.location));
    }
    token = peer_tokens_.emplace(self.location, std::move(value)).first;
  }
  answer.peer_token = token->second;
  const int64_t now = options_.clock.UnixSeconds();
  for (const auto& [device_name, record] : devices_) {
    const Device& device = record.device;
    if (device.name == self.name || device.location != self.location || device.revoked ||
        device.last_seen == 0 || now - device.last_seen > options_.peer_online_for.count()) {
      continue;
    }
    LocationPeer peer;
    peer.device = device.name;
    peer.last_seen = device.last_seen;
    if (device.heartbeat) {
      peer.url = device.heartbeat->advertise_url;
      peer.grpc_address = device.heartbeat->grpc_address;
      peer.blobs = device.heartbeat->blobs;
      for (const ModelReport& model : device.heartbeat->models) {
        if (model.state == "READY") {
          peer.models.push_back(model.name);
        }
      }
    }
    answer.peers.push_back(std::move(peer));
  }
  return answer;
}

}  // namespace perch
