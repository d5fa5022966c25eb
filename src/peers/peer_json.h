// The JSON of one agent as its peers see it: what `GET /perch/v1/peer`
// answers and what the hub lists per device,
//   {"device", "url", "grpc_address", "models": [...], "blobs": [...]}
//
// Threading: pure functions; safe from any thread.
#pragma once

#include <string>
#include <string_view>

#include "core/status.h"
#include "peers/peer_directory.h"

namespace perch {

std::string EncodePeer(const Peer& peer);
// InvalidArgument, saying what is wrong, for a body that is not JSON of
// that shape or names no device.
Result<Peer> DecodePeer(std::string_view json);

}  // namespace perch
