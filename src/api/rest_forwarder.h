// Internal to api/: REST forwarding (forwarding.h). Passes the request to a
// peer as it came (method, path and query, body bytes and the binary tensor
// extension's header, undecoded), with the hop header and the peer token in
// place of the client's credential, and passes the peer's answer back.
//
// Connections: a small pool of http::Clients per peer, so that forwarded
// requests reuse kept-alive connections instead of connecting each time.
//
// Threading: Forward is thread-safe; each call takes a client of its own.
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "api/forwarding.h"
#include "core/log.h"
#include "core/thread_annotations.h"
#include "http/client.h"
#include "http/message.h"
#include "peers/peer_directory.h"

namespace perch::api {

class RestForwarder {
 public:
  // `max_body_bytes`: the largest answer accepted from a peer.
  RestForwarder(const ForwardingOptions& options, PeerDirectory& peers, size_t max_body_bytes,
                const Logger& logger);
  RestForwarder(const RestForwarder&) = delete;
  RestForwarder& operator=(const RestForwarder&) = delete;

  // Answers `request`, for `model`, with a peer's answer (its status, body,
  // Content-Type, Inference-Header-Content-Length and Perch-Device). When no
  // peer could answer: 503 (every peer serving it failed), 502 (a peer
  // refused this agent's peer token).
  // The body is moved out of `request`.
  void Forward(http::Request& request, std::string_view model, http::Response& response);

 private:
  // One attempt on `peer`. Unavailable: the peer could not be reached or
  // went silent (worth trying another one).
  Result<http::ClientResponse> Send(const Peer& peer, const http::Request& request,
                                    std::string& body);
  Result<std::unique_ptr<http::Client>> TakeClient(const std::string& origin);
  void ReturnClient(const std::string& origin, std::unique_ptr<http::Client> client);

  const ForwardingOptions& options_;
  PeerDirectory& peers_;
  const size_t max_body_bytes_;
  const Logger& logger_;
  Mutex mutex_;
  // Idle clients by peer base URL.
  std::map<std::string, std::vector<std::unique_ptr<http::Client>>, std::less<>> idle_
      GUARDED_BY(mutex_);
};

}  // namespace perch::api
