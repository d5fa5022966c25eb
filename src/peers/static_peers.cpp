#include "peers/static_peers.h"

#include <fmt/format.h>

#include "http/client.h"
#include "peers/peer_json.h"

namespace perch {

Result<std::string> CheckPeerUrl(std::string_view url, std::string_view flag) {
  std::string text(url);
  while (text.ends_with('/')) {
    text.pop_back();
  }
  for (const std::string_view scheme : {"http://", "https://"}) {
    if (text.starts_with(scheme)) {
      const std::string rest = text.substr(scheme.size());
      if (!rest.empty() && rest.find('/') == std::string::npos &&
          rest.find_first_of(" \t\r\n@?#") == std::string::npos) {
        return text;
      }
    }
  }
  return InvalidArgument(fmt::format("{} '{}' must be http://HOST:PORT or https://HOST:PORT", flag,
                                     text.substr(0, 200)));
}

class StaticPeers::Impl {
 public:
  Impl(StaticPeersOptions options, PeerDirectory& directory, Logger logger,
       std::unique_ptr<http::Client> client)
      : options_(std::move(options)),
        directory_(directory),
        logger_(std::move(logger)),
        client_(std::move(client)) {}

  void Start() {
    thread_ = std::jthread([this](const std::stop_token& stop) { Run(stop); });
  }

  void Stop() {
    if (thread_.joinable()) {
      thread_.request_stop();
      wake_.notify_all();
      thread_.join();
    }
  }

  void PollOnce() {
    std::vector<Peer> answered;
    for (const std::string& url : options_.urls) {
      auto peer = Ask(url);
      if (peer.ok()) {
        devices_[url] = peer->device;
        directory_.MarkHealthy(peer->device);
        answered.push_back(std::move(peer).value());
        continue;
      }
      if (const auto known = devices_.find(url); known != devices_.end()) {
        directory_.MarkFailed(known->second);
      }
      // One line per change of a peer's trouble, not one per poll.
      std::string& last = problems_[url];
      if (last != peer.status().message()) {
        last = peer.status().message();
        logger_.Warn("peer {}: {}", url, last);
      }
    }
    directory_.Replace("static", std::move(answered));
  }

 private:
  Result<Peer> Ask(const std::string& url) {
    http::ClientRequest request;
    request.url = url + "/perch/v1/peer";
    if (const std::string token = directory_.Token(); !token.empty()) {
      request.headers.Set("Authorization", "Bearer " + token);
    }
    request.max_body_bytes = 16 << 20;
    PERCH_ASSIGN_OR_RETURN(const http::ClientResponse response, client_->Send(request));
    if (response.status == 401) {
      return Status(StatusCode::kUnauthenticated,
                    "refused this agent's peer token (is --peer-token the same on both?)");
    }
    if (response.status != 200) {
      return Unavailable(fmt::format("answered HTTP {} to GET /perch/v1/peer", response.status));
    }
    PERCH_ASSIGN_OR_RETURN(Peer peer, DecodePeer(response.body));
    if (peer.url.empty()) {
      peer.url = url;  // reachable there, whatever it advertises
    }
    problems_.erase(url);
    return peer;
  }

  void Run(const std::stop_token& stop) {
    while (!stop.stop_requested()) {
      PollOnce();
      std::unique_lock lock(wake_mutex_);
      wake_.wait_for(lock, stop, options_.interval, [] { return false; });
    }
  }

  const StaticPeersOptions options_;
  PeerDirectory& directory_;
  const Logger logger_;
  // Used by the polling thread only (or by PollOnce while it is stopped).
  std::unique_ptr<http::Client> client_;
  std::map<std::string, std::string> devices_;   // url -> device it last answered as
  std::map<std::string, std::string> problems_;  // url -> last problem logged
  std::mutex wake_mutex_;
  std::condition_variable_any wake_;
  std::jthread thread_;
};

Result<std::unique_ptr<StaticPeers>> StaticPeers::Create(StaticPeersOptions options,
                                                         PeerDirectory& directory, Logger logger) {
  for (std::string& url : options.urls) {
    PERCH_ASSIGN_OR_RETURN(url, CheckPeerUrl(url, "--peer"));
  }
  PERCH_ASSIGN_OR_RETURN(auto client, http::Client::Create(http::ClientOptions{
                                          .ca_file = options.ca_file,
                                          .connect_timeout = options.timeout,
                                          .read_timeout = options.timeout,
                                      }));
  return std::unique_ptr<StaticPeers>(new StaticPeers(
      std::make_unique<Impl>(std::move(options), directory, std::move(logger), std::move(client))));
}

StaticPeers::StaticPeers(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
StaticPeers::~StaticPeers() { Stop(); }
void StaticPeers::Start() { impl_->Start(); }
void StaticPeers::Stop() { impl_->Stop(); }
void StaticPeers::PollOnce() { impl_->PollOnce(); }

}  // namespace perch
