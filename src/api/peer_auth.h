// Internal to api/: the token checks REST and gRPC share for network local.
// The location's peer tokens are the static one (--peer-token) and the one
// the PeerDirectory holds (issued by the hub); either is accepted.
#pragma once

#include <string>

#include "core/status.h"
#include "http/message.h"
#include "peers/peer_directory.h"

namespace perch::api {

// Ok when the request carries a peer token of the location; Unauthenticated
// otherwise, also when the agent has no peer token at all.
Status RequirePeerToken(const http::Request& request, const std::string& peer_token,
                        const PeerDirectory* peers);

// Ok when `api_token` is empty (the routes are open), or the request
// carries it or a peer token of the location.
Status RequireApiOrPeerToken(const http::Request& request, const std::string& api_token,
                             const std::string& peer_token, const PeerDirectory* peers);

}  // namespace perch::api
