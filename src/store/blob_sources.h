// Places other than the registry that may hold a blob: the other agents of
// the location (network local, docs/network-local.md). A pull asks them
// first and falls back to the registry; store/ knows them only through
// these callbacks, which the wiring fills from the location's peers.
//
// Threading: the callbacks are called from the pulling thread; whoever
// fills them makes them safe to call from there.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "core/status.h"
#include "store/digest.h"

namespace perch {

// An agent's blob route answers a HEAD for a blob it is still downloading
// with 404 and this header (the bytes it has so far): a peer waits for it
// instead of fetching the same blob from the registry too.
inline constexpr const char* kBlobPendingHeader = "Perch-Blob-Pending";

// One other agent: its blobs are at URL/v2/<repository>/blobs/<digest>.
struct BlobSource {
  std::string name;   // its device name: for messages and `failed`
  std::string url;    // http[s]://HOST:PORT
  std::string token;  // sent as "Authorization: Bearer <token>"
};

struct BlobSources {
  // This agent's device name: with the names of the peers, it decides
  // which agent of the location fetches a blob from the registry when
  // several want it at once.
  std::string self;
  // Peers said to hold `digest`, best first.
  std::function<std::vector<BlobSource>(const Digest& digest)> holders;
  // Every peer worth asking (it may have the blob, or be fetching it).
  std::function<std::vector<BlobSource>()> peers;
  // `source` failed (unreachable, stalled, corrupt): avoid it for a while.
  std::function<void(const BlobSource& source, const Status& why)> failed;
  std::chrono::milliseconds connect_timeout{1000};
  // No byte from a peer for this long: it is given up (checked about once
  // a second).
  std::chrono::milliseconds stall_timeout{3000};
  // How long an agent waits, per agent ranked before it for this blob, for
  // that agent to start fetching it from the registry.
  std::chrono::milliseconds claim_wait{1500};

  bool enabled() const { return static_cast<bool>(holders); }
};

}  // namespace perch
