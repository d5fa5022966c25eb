// `perch serve`, network local (docs/network-local.md): the peer flags, the
// address this agent advertises to its peers, and the PeerDirectory wired
// to the pulls (blobs asked of peers first) and to static discovery.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/log.h"
#include "core/status.h"
#include "fleet/fleet_types.h"
#include "peers/peer_directory.h"
#include "peers/static_peers.h"
#include "store/blob_sources.h"
#include "store/blob_store.h"

namespace perch::cli {

struct PeerFlags {
  std::vector<std::string> peers;  // --peer URL (repeatable; PERCH_PEERS)
  std::string advertise_url;       // --advertise-url
  std::string advertise_grpc;      // --advertise-grpc
  std::string peer_token;          // --peer-token (PERCH_PEER_TOKEN)
};

void AddPeerFlags(CLI::App& app, PeerFlags& flags);

// What needs no network: the URLs, a token for --peer without a hub, and
// an address to advertise when listening on a wildcard host with --peer.
// InvalidArgument naming the flag.
Status CheckPeerFlags(const PeerFlags& flags, bool with_hub, const std::string& host);

// The REST base URL peers use: --advertise-url, or SCHEME://HOST:PORT of the
// listener when HOST is not a wildcard (empty then).
std::string AdvertisedUrl(const PeerFlags& flags, std::string_view scheme, const std::string& host,
                          int port);
// The gRPC HOST:PORT peers use: --advertise-grpc, or HOST:PORT of the gRPC
// listener, HOST being --advertise-url's when --host is a wildcard; empty
// without gRPC.
std::string AdvertisedGrpc(const PeerFlags& flags, const std::string& host, int port);

// Blob sources for pulls: the directory's peers (with its token), failures
// marked in it.
BlobSources BlobSourcesOf(PeerDirectory& directory);

// Hands the hub's answer to `directory`: its peers (source "hub") and the
// location's peer token.
std::function<void(const LocationPeers&)> HubPeersInto(PeerDirectory& directory);

// Adds what the location's other agents learn through the hub: this
// agent's advertised addresses and the blobs of `blobs` (may be null).
void FillPeerHeartbeat(const PeerDirectory& directory, const BlobStore* blobs,
                       Heartbeat& heartbeat);

// The --peer poller, nullptr when there are no --peer flags.
Result<std::unique_ptr<StaticPeers>> OpenStaticPeers(const PeerFlags& flags,
                                                     const std::string& ca_file,
                                                     PeerDirectory& directory,
                                                     const Logger& logger);

}  // namespace perch::cli
