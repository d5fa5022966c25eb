// Forwarding (network local, docs/network-local.md): an agent answers for
// every model its location serves. An OIP request (REST or gRPC: model
// metadata, readiness, infer) for a model this agent does not serve goes to
// a peer that does (PeerDirectory::Acquire: the healthy one with the fewest
// requests outstanding from here), at most one hop:
//
// - the forwarded request carries `Perch-Forwarded-By: <this device>` (gRPC
//   metadata `perch-forwarded-by`) and the location's peer token (the
//   PeerDirectory's) as its bearer credential, never the client's; a request that arrives with the
//   hop header is always answered here, never forwarded again, whoever set it;
// - every answer of those routes names the device that served it: header
//   `Perch-Device`, gRPC trailing metadata `perch-device`;
// - a peer that cannot be reached or goes silent is marked failed (skipped
//   for a while) and the next one is tried, once;
// - a model no agent of the location serves is a 404 that says so.
//
// This header holds the options (filled in src/cli) and the routing
// decision both transports share; the transports live in rest_forwarder.h
// and grpc_forwarder.h, internal to api/.
//
// Threading: RouteRequest is thread-safe (it reads thread-safe components).
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "core/status.h"
#include "models/model_manager.h"
#include "peers/peer_directory.h"

namespace perch {

struct ForwardingOptions {
  // This agent's device name: the value of Perch-Device on its own answers
  // and of Perch-Forwarded-By on the requests it forwards. Empty: neither.
  std::string device{};
  std::chrono::milliseconds connect_timeout{2'000};  // to a peer, TLS included
  // REST: a peer that sends nothing for this long fails (and the next one
  // is tried); gRPC: the deadline of a forwarded call whose client gave none.
  std::chrono::milliseconds timeout{30'000};
  std::string ca_file{};  // PEM CAs for https peers; empty: the system's
};

namespace api {

inline constexpr std::string_view kForwardedByHeader = "Perch-Forwarded-By";
inline constexpr std::string_view kDeviceHeader = "Perch-Device";
inline constexpr const char* kForwardedByMetadata = "perch-forwarded-by";
inline constexpr const char* kDeviceMetadata = "perch-device";

enum class Destination {
  kHere,     // answer locally (served here, a local error, or already forwarded)
  kPeer,     // a peer serves it: forward
  kNowhere,  // no agent of the location serves it: NowhereServed()
};

// Where a request for `model` (`version`: "" for the newest) goes. `peers`
// null: always here. `forwarded`: the request carries the hop header.
Destination RouteRequest(const ModelManager& models, const PeerDirectory* peers, bool forwarded,
                         std::string_view model, std::string_view version);

// The NotFound for a model no agent of the location serves.
Status NowhereServed(std::string_view model, std::string_view device);

// Unavailable: peers serve `model` but every one of them failed recently.
Status NoHealthyPeer(std::string_view model);

}  // namespace api
}  // namespace perch
