#include "cli/network_local.h"

#include <fmt/format.h>

namespace perch::cli {
namespace {

bool IsWildcard(const std::string& host) {
  return host.empty() || host == "0.0.0.0" || host == "::" || host == "[::]" || host == "*";
}

std::string HostForUrl(const std::string& host) {
  return host.find(':') != std::string::npos && !host.starts_with('[') ? "[" + host + "]" : host;
}

}  // namespace

void AddPeerFlags(CLI::App& app, PeerFlags& flags) {
  app.add_option("--peer", flags.peers,
                 "Another agent of this location, http(s)://HOST:PORT of its REST port "
                 "(repeatable; without a hub): blobs are shared with it and it is asked for "
                 "models this agent does not serve")
      ->envname("PERCH_PEERS")
      ->delimiter(',');
  app.add_option("--advertise-url", flags.advertise_url,
                 "The REST base URL this agent's peers reach it at (default: the REST "
                 "listener's, unless --host is a wildcard)")
      ->envname("PERCH_ADVERTISE_URL");
  app.add_option("--advertise-grpc", flags.advertise_grpc,
                 "The HOST:PORT of the gRPC port this agent's peers reach it at (default: the "
                 "gRPC listener's, unless --host is a wildcard)")
      ->envname("PERCH_ADVERTISE_GRPC");
  app.add_option("--peer-token", flags.peer_token,
                 "The credential the agents of this location share, without a hub (with one, "
                 "the hub issues it); prefer the environment variable: flags show in ps")
      ->envname("PERCH_PEER_TOKEN");
}

Status CheckPeerFlags(const PeerFlags& flags, bool with_hub, const std::string& host) {
  for (const std::string& url : flags.peers) {
    PERCH_RETURN_IF_ERROR(CheckPeerUrl(url, "--peer").status());
  }
  if (!flags.advertise_url.empty()) {
    PERCH_RETURN_IF_ERROR(CheckPeerUrl(flags.advertise_url, "--advertise-url").status());
  }
  if (!flags.advertise_grpc.empty() &&
      (flags.advertise_grpc.find(':') == std::string::npos ||
       flags.advertise_grpc.find_first_of("/ \t@") != std::string::npos)) {
    return InvalidArgument("--advertise-grpc '" + flags.advertise_grpc.substr(0, 200) +
                           "' must be HOST:PORT");
  }
  if (flags.peers.empty()) {
    return Status::Ok();
  }
  if (!with_hub && flags.peer_token.empty()) {
    return InvalidArgument(
        "--peer needs --peer-token (PERCH_PEER_TOKEN): the agents of a location authenticate "
        "each other with it; give every one of them the same value");
  }
  if (IsWildcard(host) && flags.advertise_url.empty()) {
    return InvalidArgument("--host " + (host.empty() ? std::string("''") : host) +
                           " listens on every address, so peers cannot be told which one "
                           "reaches this agent: give --advertise-url http://ADDRESS:PORT");
  }
  return Status::Ok();
}

std::string AdvertisedUrl(const PeerFlags& flags, std::string_view scheme, const std::string& host,
                          int port) {
  if (!flags.advertise_url.empty()) {
    auto checked = CheckPeerUrl(flags.advertise_url, "--advertise-url");
    return checked.ok() ? *checked : flags.advertise_url;
  }
  if (IsWildcard(host)) {
    return "";
  }
  return fmt::format("{}://{}:{}", scheme, HostForUrl(host), port);
}

std::string AdvertisedGrpc(const PeerFlags& flags, const std::string& host, int port) {
  if (!flags.advertise_grpc.empty()) {
    return flags.advertise_grpc;
  }
  if (port <= 0) {
    return "";
  }
  if (!IsWildcard(host)) {
    return fmt::format("{}:{}", HostForUrl(host), port);
  }
  // A wildcard listener: the host peers reach REST at reaches gRPC too.
  const size_t scheme = flags.advertise_url.find("://");
  if (scheme == std::string::npos) {
    return "";
  }
  const std::string authority = flags.advertise_url.substr(scheme + 3);
  const size_t colon = authority.rfind(':');
  const std::string advertised_host = colon == std::string::npos || authority.ends_with(']')
                                          ? authority
                                          : authority.substr(0, colon);
  return fmt::format("{}:{}", advertised_host, port);
}

BlobSources BlobSourcesOf(PeerDirectory& directory) {
  const auto to_sources = [&directory](const std::vector<Peer>& peers) {
    std::vector<BlobSource> sources;
    const std::string token = directory.Token();
    for (const Peer& peer : peers) {
      if (!peer.url.empty()) {
        sources.push_back(BlobSource{.name = peer.device, .url = peer.url, .token = token});
      }
    }
    return sources;
  };
  BlobSources sources;
  sources.self = directory.Self().device;
  sources.holders = [&directory, to_sources](const Digest& digest) {
    return to_sources(directory.HoldersOf(digest.str()));
  };
  sources.peers = [&directory, to_sources] { return to_sources(directory.Available()); };
  sources.failed = [&directory](const BlobSource& source, const Status&) {
    directory.MarkFailed(source.name);
  };
  return sources;
}

std::function<void(const LocationPeers&)> HubPeersInto(PeerDirectory& directory) {
  return [&directory](const LocationPeers& answer) {
    std::vector<Peer> peers;
    for (const LocationPeer& peer : answer.peers) {
      peers.push_back(Peer{.device = peer.device,
                           .url = peer.url,
                           .grpc_address = peer.grpc_address,
                           .models = peer.models,
                           .blobs = peer.blobs});
    }
    directory.Replace("hub", std::move(peers));
    if (!answer.peer_token.empty()) {
      directory.SetToken(answer.peer_token);
    }
  };
}

void FillPeerHeartbeat(const PeerDirectory& directory, const BlobStore* blobs,
                       Heartbeat& heartbeat) {
  const Peer self = directory.Self();
  heartbeat.advertise_url = self.url;
  heartbeat.grpc_address = self.grpc_address;
  if (blobs != nullptr) {
    if (auto held = blobs->List(); held.ok()) {
      for (const BlobInfo& blob : *held) {
        heartbeat.blobs.push_back(blob.digest.str());
      }
    }
  }
}

Result<std::unique_ptr<StaticPeers>> OpenStaticPeers(const PeerFlags& flags,
                                                     const std::string& ca_file,
                                                     PeerDirectory& directory,
                                                     const Logger& logger) {
  if (flags.peers.empty()) {
    return std::unique_ptr<StaticPeers>();
  }
  return StaticPeers::Create(StaticPeersOptions{.urls = flags.peers, .ca_file = ca_file}, directory,
                             logger);
}

}  // namespace perch::cli
