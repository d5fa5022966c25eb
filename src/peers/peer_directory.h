// PeerDirectory: what an agent knows about the other agents of its edge
// location (network local, docs/network-local.md): where each one listens,
// which models it serves and which verified blobs it holds, and how each
// has behaved lately.
//
// Two sources fill it, each replacing only what it said before: the hub
// (`hub`: the location's devices, refreshed with the desired state) and the
// static peers given with --peer (`static`: each one's own /perch/v1/peer
// answer). A device named by both is merged: the newer report wins.
//
// Peers that failed (a refused connection, a stall, a corrupt blob) are
// avoided for `avoid_for`; forwarding picks among the others the one with
// the fewest requests this agent has outstanding to it.
//
// Threading: every method is thread-safe; a PeerLease may be released on
// any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.h"
#include "core/thread_annotations.h"

namespace perch {

// One other agent of the location, as a source reported it.
struct Peer {
  std::string device;               // its device name, unique within the location
  std::string url;                  // base URL of its REST port: http[s]://HOST:PORT
  std::string grpc_address;         // HOST:PORT of its gRPC port; empty: none
  std::vector<std::string> models;  // models it serves (READY)
  std::vector<std::string> blobs;   // digests of the blobs it holds, verified
};

struct PeerDirectoryOptions {
  std::string self_device;                     // never listed as a peer of itself
  std::chrono::milliseconds avoid_for{30000};  // how long a failed peer is skipped
  WallClock clock{};
};

class PeerDirectory;

// One request outstanding to `peer`, counted while the lease lives.
class PeerLease {
 public:
  PeerLease(PeerLease&& other) noexcept;
  PeerLease& operator=(PeerLease&& other) noexcept;
  PeerLease(const PeerLease&) = delete;
  PeerLease& operator=(const PeerLease&) = delete;
  ~PeerLease();

  const Peer& peer() const { return peer_; }

 private:
  friend class PeerDirectory;
  PeerLease(PeerDirectory* directory, Peer peer);
  void Release();

  PeerDirectory* directory_;
  Peer peer_;
};

class PeerDirectory {
 public:
  explicit PeerDirectory(PeerDirectoryOptions options);
  PeerDirectory(const PeerDirectory&) = delete;
  PeerDirectory& operator=(const PeerDirectory&) = delete;

  // Replaces everything `source` said before with `peers` (self dropped).
  void Replace(std::string_view source, std::vector<Peer> peers);

  // Every known peer, merged over the sources, ordered by device name.
  std::vector<Peer> Peers() const;
  // Every peer not being avoided, ordered by device name.
  std::vector<Peer> Available() const;
  // Peers holding blob `digest` that are not being avoided, the ones that
  // never failed first.
  std::vector<Peer> HoldersOf(std::string_view digest) const;
  // Whether any peer, avoided or not, serves `model`.
  bool AnyServes(std::string_view model) const;
  // A peer serving `model`, not avoided, with the fewest outstanding
  // requests; nullopt when there is none.
  std::optional<PeerLease> Acquire(std::string_view model);

  // `device` failed: skip it for `avoid_for`.
  void MarkFailed(std::string_view device);
  // `device` answered: stop avoiding it.
  void MarkHealthy(std::string_view device);

  // The location's peer credential: what this agent sends to its peers and
  // accepts from them (set from --peer-token, or by the hub, which issues
  // one per location and may change it). Empty: none yet.
  void SetToken(std::string token);
  std::string Token() const;

  // Where this agent's peers reach it (its advertised REST base URL and
  // gRPC HOST:PORT), known once its listeners are bound.
  void SetSelf(std::string url, std::string grpc_address);
  // This agent as its peers see it: device, url and grpc_address (models
  // and blobs are filled by whoever answers for it).
  Peer Self() const;

 private:
  friend class PeerLease;
  struct Report {
    uint64_t sequence = 0;  // the order of Replace calls
    std::vector<Peer> peers;
  };
  struct Health {
    WallClock::TimePoint avoid_until{};
    int64_t failures = 0;
    int64_t outstanding = 0;
  };

  void ReleaseOne(const std::string& device);
  std::vector<Peer> MergedLocked() const REQUIRES(mutex_);
  bool AvoidedLocked(const std::string& device) const REQUIRES(mutex_);

  const PeerDirectoryOptions options_;
  mutable Mutex mutex_;
  uint64_t reports_ GUARDED_BY(mutex_) = 0;
  std::map<std::string, Report, std::less<>> by_source_ GUARDED_BY(mutex_);
  std::map<std::string, Health, std::less<>> health_ GUARDED_BY(mutex_);
  std::string token_ GUARDED_BY(mutex_);
  std::string self_url_ GUARDED_BY(mutex_);
  std::string self_grpc_address_ GUARDED_BY(mutex_);
};

}  // namespace perch
