// StaticPeers: the peers named with --peer URL, without a hub. Every
// `interval` (and once at Start) it asks each URL `GET /perch/v1/peer` with
// the location's peer token and puts the answers into the PeerDirectory as
// source "static"; a URL that does not answer is left out and its device,
// when known from an earlier answer, is marked failed.
//
// Threading: Start runs one background thread; Start and Stop are called
// from one controlling thread. PollOnce may be called while it is stopped.
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/log.h"
#include "core/status.h"
#include "peers/peer_directory.h"

namespace perch {

struct StaticPeersOptions {
  std::vector<std::string> urls;  // base URLs: http[s]://HOST:PORT
  std::chrono::milliseconds interval{5000};
  std::chrono::milliseconds timeout{2000};  // connect and read, per peer
  std::string ca_file;                      // https peers: the CAs to trust; empty: the system's
};

class StaticPeers {
 public:
  // InvalidArgument for a URL that is not http(s)://HOST[:PORT] or an
  // unreadable ca_file. `directory` must outlive this object.
  static Result<std::unique_ptr<StaticPeers>> Create(StaticPeersOptions options,
                                                     PeerDirectory& directory, Logger logger);
  ~StaticPeers();
  StaticPeers(const StaticPeers&) = delete;
  StaticPeers& operator=(const StaticPeers&) = delete;

  void Start();
  void Stop();
  // Asks every URL once and replaces the directory's "static" peers.
  void PollOnce();

 private:
  class Impl;
  explicit StaticPeers(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// "http(s)://HOST[:PORT]" with no path (a trailing '/' is dropped), or
// InvalidArgument naming `flag`.
Result<std::string> CheckPeerUrl(std::string_view url, std::string_view flag);

}  // namespace perch
