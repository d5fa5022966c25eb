#include "api/forwarding.h"

#include <fmt/format.h>

namespace perch::api {

Destination RouteRequest(const ModelManager& models, const PeerDirectory* peers, bool forwarded,
                         std::string_view model, std::string_view version) {
  if (peers == nullptr || forwarded) {
    return Destination::kHere;
  }
  // Lookup, not Acquire: a version out of memory (--memory-limit) is served
  // here, and loading it is for the request itself, within its deadline.
  const Status local = models.Lookup(model, version);
  if (local.ok()) {
    return Destination::kHere;
  }
  const StatusCode code = local.code();
  // A malformed name or version is the client's error wherever it goes.
  if (code != StatusCode::kNotFound && code != StatusCode::kUnavailable) {
    return Destination::kHere;
  }
  if (peers->AnyServes(model)) {
    return Destination::kPeer;
  }
  // A model loading here is answered here (503, "loading"); an unknown one is
  // said to be unknown to the whole location, once there is a location.
  if (code == StatusCode::kNotFound && !peers->Peers().empty()) {
    return Destination::kNowhere;
  }
  return Destination::kHere;
}

Status NowhereServed(std::string_view model, std::string_view device) {
  return NotFound(fmt::format(
      "no agent of this location serves model '{}': neither this one{} nor any of its peers; "
      "POST /v2/repository/index with {{\"location\": true}} lists the models the location serves",
      model, device.empty() ? std::string() : fmt::format(" ({})", device)));
}

Status NoHealthyPeer(std::string_view model) {
  return Unavailable(
      fmt::format("model '{}' is served by other agents of this location, but every one of them "
                  "failed to answer lately; retry in a while",
                  model));
}

}  // namespace perch::api
