#include "api/peer_auth.h"

#include "http/credentials.h"

namespace perch::api {
namespace {

bool CarriesPeerToken(const http::Request& request, const std::string& peer_token,
                      const PeerDirectory* peers) {
  if (!peer_token.empty() && http::RequireToken(request, peer_token).ok()) {
    return true;
  }
  if (peers == nullptr) {
    return false;
  }
  const std::string issued = peers->Token();
  return !issued.empty() && http::RequireToken(request, issued).ok();
}

}  // namespace

Status RequirePeerToken(const http::Request& request, const std::string& peer_token,
                        const PeerDirectory* peers) {
  if (CarriesPeerToken(request, peer_token, peers)) {
    return Status::Ok();
  }
  if (peer_token.empty() && (peers == nullptr || peers->Token().empty())) {
    return Status(StatusCode::kUnauthenticated,
                  "this endpoint is for the agents of this location, and this agent has no peer "
                  "token (--peer-token, or a hub)");
  }
  // One answer for a missing, malformed or wrong token.
  return Status(StatusCode::kUnauthenticated,
                "this endpoint is for the agents of this location: send 'Authorization: Bearer "
                "<peer token>' with the location's peer token");
}

Status RequireApiOrPeerToken(const http::Request& request, const std::string& api_token,
                             const std::string& peer_token, const PeerDirectory* peers) {
  if (api_token.empty() || CarriesPeerToken(request, peer_token, peers)) {
    return Status::Ok();
  }
  return http::RequireToken(request, api_token);
}

}  // namespace perch::api
