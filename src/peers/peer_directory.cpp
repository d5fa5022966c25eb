#include "peers/peer_directory.h"

#include <algorithm>
#include <utility>

namespace perch {

PeerLease::PeerLease(PeerDirectory* directory, Peer peer)
    : directory_(directory), peer_(std::move(peer)) {}

PeerLease::PeerLease(PeerLease&& other) noexcept
    : directory_(std::exchange(other.directory_, nullptr)), peer_(std::move(other.peer_)) {}

PeerLease& PeerLease::operator=(PeerLease&& other) noexcept {
  if (this != &other) {
    Release();
    directory_ = std::exchange(other.directory_, nullptr);
    peer_ = std::move(other.peer_);
  }
  return *this;
}

PeerLease::~PeerLease() { Release(); }

void PeerLease::Release() {
  if (directory_ != nullptr) {
    std::exchange(directory_, nullptr)->ReleaseOne(peer_.device);
  }
}

PeerDirectory::PeerDirectory(PeerDirectoryOptions options) : options_(std::move(options)) {}

void PeerDirectory::Replace(std::string_view source, std::vector<Peer> peers) {
  std::erase_if(peers, [&](const Peer& peer) { return peer.device == options_.self_device; });
  MutexLock lock(mutex_);
  by_source_.insert_or_assign(std::string(source), Report{++reports_, std::move(peers)});
}

std::vector<Peer> PeerDirectory::MergedLocked() const {
  // A device named by two sources: the newer report wins.
  std::map<std::string, std::pair<uint64_t, const Peer*>, std::less<>> merged;
  for (const auto& [source, report] : by_source_) {
    for (const Peer& peer : report.peers) {
      auto [it, inserted] = merged.try_emplace(peer.device, report.sequence, &peer);
      if (!inserted && report.sequence > it->second.first) {
        it->second = {report.sequence, &peer};
      }
    }
  }
  std::vector<Peer> out;
  out.reserve(merged.size());
  for (const auto& [device, newest] : merged) {
    out.push_back(*newest.second);
  }
  return out;
}

bool PeerDirectory::AvoidedLocked(const std::string& device) const {
  const auto it = health_.find(device);
  return it != health_.end() && options_.clock.Now() < it->second.avoid_until;
}

std::vector<Peer> PeerDirectory::Peers() const {
  MutexLock lock(mutex_);
  return MergedLocked();
}

std::vector<Peer> PeerDirectory::HoldersOf(std::string_view digest) const {
  MutexLock lock(mutex_);
  // Read under the lock here: a sort's comparator cannot say it holds it.
  std::vector<std::pair<int64_t, Peer>> ranked;
  for (Peer& peer : MergedLocked()) {
    if (!AvoidedLocked(peer.device) &&
        std::find(peer.blobs.begin(), peer.blobs.end(), digest) != peer.blobs.end()) {
      const auto it = health_.find(peer.device);
      ranked.emplace_back(it == health_.end() ? int64_t{0} : it->second.failures, std::move(peer));
    }
  }
  std::stable_sort(ranked.begin(), ranked.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<Peer> holders;
  holders.reserve(ranked.size());
  for (auto& [failures, peer] : ranked) {
    holders.push_back(std::move(peer));
  }
  return holders;
}

bool PeerDirectory::AnyServes(std::string_view model) const {
  MutexLock lock(mutex_);
  for (const Peer& peer : MergedLocked()) {
    if (std::find(peer.models.begin(), peer.models.end(), model) != peer.models.end()) {
      return true;
    }
  }
  return false;
}

std::optional<PeerLease> PeerDirectory::Acquire(std::string_view model) {
  MutexLock lock(mutex_);
  std::optional<Peer> best;
  int64_t best_outstanding = 0;
  for (Peer& peer : MergedLocked()) {
    if (AvoidedLocked(peer.device) ||
        std::find(peer.models.begin(), peer.models.end(), model) == peer.models.end()) {
      continue;
    }
    const int64_t outstanding = health_[peer.device].outstanding;
    if (!best || outstanding < best_outstanding) {
      best_outstanding = outstanding;
      best = std::move(peer);
    }
  }
  if (!best) {
    return std::nullopt;
  }
  ++health_[best->device].outstanding;
  return PeerLease(this, std::move(*best));
}

void PeerDirectory::ReleaseOne(const std::string& device) {
  MutexLock lock(mutex_);
  --health_[device].outstanding;
}

void PeerDirectory::MarkFailed(std::string_view device) {
  MutexLock lock(mutex_);
  Health& health = health_[std::string(device)];
  ++health.failures;
  health.avoid_until = options_.clock.Now() + options_.avoid_for;
}

void PeerDirectory::MarkHealthy(std::string_view device) {
  MutexLock lock(mutex_);
  health_[std::string(device)].avoid_until = {};
}

std::vector<Peer> PeerDirectory::Available() const {
  MutexLock lock(mutex_);
  std::vector<Peer> peers;
  for (Peer& peer : MergedLocked()) {
    if (!AvoidedLocked(peer.device)) {
      peers.push_back(std::move(peer));
    }
  }
  return peers;
}

void PeerDirectory::SetToken(std::string token) {
  MutexLock lock(mutex_);
  token_ = std::move(token);
}

std::string PeerDirectory::Token() const {
  MutexLock lock(mutex_);
  return token_;
}

void PeerDirectory::SetSelf(std::string url, std::string grpc_address) {
  MutexLock lock(mutex_);
  self_url_ = std::move(url);
  self_grpc_address_ = std::move(grpc_address);
}

Peer PeerDirectory::Self() const {
  MutexLock lock(mutex_);
  return Peer{.device = options_.self_device,
              .url = self_url_,
              .grpc_address = self_grpc_address_,
              .models = {},
              .blobs = {}};
}

}  // namespace perch
