#include "store/blob_sources.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <map>
#include <set>
#include <thread>

#include "http/client.h"
#include "store/blob_store.h"
#include "store/descriptor.h"
#include "store/registry_client.h"

namespace perch {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::chrono::milliseconds kPollEvery{100};

std::optional<uint64_t> ParseNumber(std::string_view text) {
  uint64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || error != std::errc() || end != text.data() + text.size()) {
    return std::nullopt;
  }
  return value;
}

// Stable across processes and hosts (unlike std::hash): every agent of the
// location ranks the same way.
uint64_t Rank(std::string_view device, const Digest& digest) {
  uint64_t hash = 14695981039346656037ULL;
  for (const std::string_view part : {device, std::string_view("\n"), digest.hex()}) {
    for (const char c : part) {
      hash = (hash ^ static_cast<unsigned char>(c)) * 1099511628211ULL;
    }
  }
  return hash;
}

std::string BlobUrl(const BlobSource& source, const std::string& repository, const Digest& digest) {
  return fmt::format("{}/v2/{}/blobs/{}", source.url, repository, digest.str());
}

void Authorize(const BlobSource& source, http::ClientRequest& request) {
  if (!source.token.empty()) {
    request.headers.Set("Authorization", "Bearer " + source.token);
  }
}

// What a HEAD for the blob says about a peer.
struct Probe {
  bool holds = false;
  std::optional<uint64_t> pending;  // still downloading: the bytes it has
  Status error;                     // unreachable or refusing
};

class PeerFetch {
 public:
  PeerFetch(const BlobSources& sources, const std::string& repository, const Descriptor& blob,
            BlobStore& store, const TransferProgress& progress, std::unique_ptr<http::Client> http)
      : sources_(sources),
        repository_(repository),
        blob_(blob),
        store_(store),
        progress_(progress),
        http_(std::move(http)),
        name_(BlobWriterName(blob.digest)) {}

  Status Run() {
    // 1. Peers said to hold it.
    for (const BlobSource& source : sources_.holders(blob_.digest)) {
      if (TryFetch(source)) {
        return Status::Ok();
      }
    }
    // 2 and 3. Any other peer, now or once it has it.
    const auto started = Clock::now();
    std::map<std::string, uint64_t> pending;  // peer -> bytes it had when last seen growing
    auto last_growth = Clock::now();
    while (true) {
      std::vector<BlobSource> peers = sources_.peers();
      std::erase_if(peers, [&](const BlobSource& peer) { return tried_.contains(peer.name); });
      if (peers.empty()) {
        return NotFound(fmt::format("no peer holds blob {}", blob_.digest.str()));
      }
      bool grew = false;
      size_t ahead = 0;  // peers ranked before this agent for the digest
      const uint64_t own_rank = Rank(sources_.self, blob_.digest);
      for (const BlobSource& peer : peers) {
        const Probe probe = Head(peer);
        if (!probe.error.ok()) {
          Failed(peer, probe.error);
          continue;
        }
        if (probe.holds) {
          if (TryFetch(peer)) {
            return Status::Ok();
          }
          continue;
        }
        if (probe.pending) {
          auto [it, inserted] = pending.try_emplace(peer.name, *probe.pending);
          if (inserted || *probe.pending > it->second) {
            it->second = *probe.pending;
            grew = true;
          }
        }
        if (Rank(peer.name, blob_.digest) < own_rank) {
          ++ahead;
        }
      }
      const auto now = Clock::now();
      if (grew) {
        last_growth = now;
      }
      if (!pending.empty()) {
        if (now - last_growth > sources_.stall_timeout) {
          return Unavailable(fmt::format("the peers downloading blob {} stopped making progress",
                                         blob_.digest.str()));
        }
      } else if (ahead == 0 || now - started > sources_.claim_wait * static_cast<int64_t>(ahead)) {
        return NotFound(fmt::format("no peer holds blob {}", blob_.digest.str()));
      }
      std::this_thread::sleep_for(kPollEvery);
    }
  }

 private:
  void Failed(const BlobSource& source, const Status& why) {
    tried_.insert(source.name);
    if (sources_.failed) {
      sources_.failed(source, why);
    }
  }

  Probe Head(const BlobSource& source) {
    http::ClientRequest request;
    request.method = "HEAD";
    request.url = BlobUrl(source, repository_, blob_.digest);
    Authorize(source, request);
    auto answer = http_->Send(request);
    Probe probe;
    if (!answer.ok()) {
      probe.error = answer.status();
    } else if (answer->status == 200) {
      probe.holds = true;
    } else if (answer->status == 404) {
      probe.pending = ParseNumber(answer->headers.Value(kBlobPendingHeader));
    } else {
      probe.error = Unavailable(fmt::format("peer {} answered HTTP {} to HEAD {}", source.name,
                                            answer->status, request.url));
    }
    return probe;
  }

  bool TryFetch(const BlobSource& source) {
    const Status fetched = Fetch(source);
    if (fetched.ok()) {
      return true;
    }
    Failed(source, fetched);
    return false;
  }

  // One GET from `source`, resuming what an earlier source left.
  Status Fetch(const BlobSource& source) {
    const std::string what = fmt::format("blob {} from peer {}", blob_.digest.str(), source.name);
    const bool resume = store_.WrittenSize(name_) > 0 && store_.WrittenSize(name_) <= blob_.size;
    PERCH_ASSIGN_OR_RETURN(std::unique_ptr<BlobWriter> writer, store_.OpenWriter(name_, resume));
    const uint64_t offset = writer->size();
    if (offset < blob_.size) {
      http::ClientRequest request;
      request.url = BlobUrl(source, repository_, blob_.digest);
      Authorize(source, request);
      if (offset > 0) {
        request.headers.Set("Range", fmt::format("bytes={}-", offset));
      }
      int status = 0;
      std::string failure;  // set when the content cannot be this blob
      Status write_status;
      request.on_head = [&](int code, const http::Headers& headers) {
        status = code;
        if (status == 206 &&
            !headers.Value("Content-Range").starts_with(fmt::format("bytes {}-", offset))) {
          failure = fmt::format("answered Range bytes={}- with Content-Range \"{}\"", offset,
                                headers.Value("Content-Range").substr(0, 100));
          return false;
        }
        if (status == 200 && offset > 0) {
          // Range ignored: start over from this peer's first byte.
          auto fresh = store_.OpenWriter(name_, /*resume=*/false);
          if (!fresh.ok()) {
            write_status = fresh.status();
            return false;
          }
          writer = std::move(fresh).value();
        }
        return status == 200 || status == 206;
      };
      request.receive_buffer_bytes = kBlobReceiveBufferBytes;
      request.on_body = [&](std::string_view piece) {
        if (writer->size() + piece.size() > blob_.size) {
          failure = fmt::format("sent more than the {} bytes the descriptor says", blob_.size);
          return false;
        }
        write_status = writer->Append(piece);
        if (!write_status.ok()) {
          return false;
        }
        if (progress_) {
          progress_(writer->size(), blob_.size);
        }
        return true;
      };
      const auto result = http_->Send(request);
      if (!failure.empty()) {
        // Bytes that cannot be the blob: none of them is kept (the writer
        // removes its file).
        return InvalidArgument(fmt::format("{}: {}; discarded", what, failure));
      }
      PERCH_RETURN_IF_ERROR(write_status);
      if (!result.ok()) {
        writer->Keep();  // the next source resumes after what arrived
        return Unavailable(fmt::format("{}: {} (got {} of {} bytes)", what,
                                       result.status().message(), writer->size(), blob_.size));
      }
      if (status != 200 && status != 206) {
        writer->Keep();
        return Unavailable(fmt::format("{}: answered HTTP {}", what, status));
      }
      if (writer->size() < blob_.size) {
        writer->Keep();
        return Unavailable(fmt::format("{}: the transfer ended after {} of {} bytes", what,
                                       writer->size(), blob_.size));
      }
    }
    const auto committed = writer->Commit(blob_.digest, blob_.size);
    if (!committed.ok()) {
      return InvalidArgument(
          fmt::format("{}: {}; the bytes were discarded", what, committed.status().message()));
    }
    return Status::Ok();
  }

  const BlobSources& sources_;
  const std::string& repository_;
  const Descriptor& blob_;
  BlobStore& store_;
  const TransferProgress& progress_;
  std::unique_ptr<http::Client> http_;
  const std::string name_;
  std::set<std::string> tried_;  // peers that failed this fetch
};

}  // namespace

Status FetchBlobFromPeers(const BlobSources& sources, const std::string& repository,
                          const Descriptor& blob, BlobStore& store,
                          const TransferProgress& progress) {
  if (!sources.enabled()) {
    return NotFound("no peers");
  }
  PERCH_ASSIGN_OR_RETURN(auto http, http::Client::Create(http::ClientOptions{
                                        .ca_file = sources.ca_file,
                                        .connect_timeout = sources.connect_timeout,
                                        .read_timeout = sources.stall_timeout,
                                    }));
  return PeerFetch(sources, repository, blob, store, progress, std::move(http)).Run();
}

}  // namespace perch
