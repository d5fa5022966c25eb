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
  std::string ca_file;  // https peers: the CAs to trust; empty: the system's

  bool enabled() const { return static_cast<bool>(holders); }
};

class BlobStore;
struct Descriptor;
// Called as bytes move: (bytes done, bytes in total).
using TransferProgress = std::function<void(uint64_t, uint64_t)>;

// Fetches `blob` from the peers into `store`, verified, before anyone asks
// the registry:
// 1. from each peer said to hold it, in order;
// 2. from any other peer that answers a HEAD for it; a peer still
//    downloading it (kBlobPendingHeader) is waited for while its download
//    makes progress;
// 3. when several agents want it at once and none has it, the one ranked
//    first for this digest (a hash of device name and digest) goes to the
//    registry, the others wait up to `claim_wait` per agent ranked before
//    them for it to start.
// A peer that fails (unreachable, stalls, answers an error, sends more
// bytes than the descriptor says or bytes that do not hash to the digest)
// is reported to `failed` and the next is tried. Bytes received from a
// peer that broke off stay under BlobWriterName(digest), so the next
// source, registry included, resumes after them with Range; oversized or
// corrupt content is discarded. Ok once the blob is committed; otherwise
// the reason no peer could give it (the caller then asks the registry).
Status FetchBlobFromPeers(const BlobSources& sources, const std::string& repository,
                          const Descriptor& blob, BlobStore& store,
                          const TransferProgress& progress);

}  // namespace perch
