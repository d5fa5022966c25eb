#include "api/rest_forwarder.h"

#include <fmt/format.h>

#include <utility>

#include "http/errors.h"

namespace perch::api {
namespace {

// The request headers a peer needs to read the body as the client meant it.
// Content-Encoding is not among them: the body was decompressed on arrival.
constexpr std::string_view kRequestHeaders[] = {"Content-Type", "Inference-Header-Content-Length",
                                                "Accept"};
// The answer headers that describe the body a client gets back.
constexpr std::string_view kAnswerHeaders[] = {"Content-Type", "Inference-Header-Content-Length",
                                               "Retry-After"};
// Idle clients kept per peer: enough for the handler threads' usual concurrency.
constexpr size_t kIdlePerPeer = 16;

}  // namespace

RestForwarder::RestForwarder(const ForwardingOptions& options, PeerDirectory& peers,
                             size_t max_body_bytes, const Logger& logger)
    : options_(options), peers_(peers), max_body_bytes_(max_body_bytes), logger_(logger) {}

void RestForwarder::Forward(http::Request& request, std::string_view model,
                            http::Response& response) {
  std::string tried;
  Status last_failure;
  // The first peer, and if it cannot be reached, one more.
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto lease = peers_.Acquire(model);
    if (!lease) {
      break;
    }
    const Peer& peer = lease->peer();
    auto answer = Send(peer, request, request.body);
    if (!answer.ok()) {
      if (answer.status().code() != StatusCode::kUnavailable) {
        http::SetError(response, answer.status());
        return;
      }
      logger_.Warn("forwarding {} {} to {} failed, avoiding it for a while: {}", request.method,
                   request.path, peer.device, answer.status().message());
      peers_.MarkFailed(peer.device);
      tried += tried.empty() ? peer.device : ", " + peer.device;
      last_failure = answer.status();
      continue;
    }
    if (answer->status == 401 || answer->status == 403) {
      http::SetJson(response, 502,
                    http::ErrorJson(Unavailable(fmt::format(
                        "agent {} of this location refused this agent's peer token (HTTP {}); "
                        "give every agent of the location the same --peer-token",
                        peer.device, answer->status))));
      return;
    }
    response.status = answer->status;
    for (const std::string_view name : kAnswerHeaders) {
      if (auto value = answer->headers.Get(name)) {
        response.headers.Set(name, std::string(*value));
      }
    }
    const auto device = answer->headers.Get(kDeviceHeader);
    response.headers.Set(kDeviceHeader, device ? std::string(*device) : peer.device);
    response.body = std::move(answer->body);
    return;
  }
  if (tried.empty()) {
    http::SetError(response, NoHealthyPeer(model));
    return;
  }
  http::SetError(response,
                 Unavailable(fmt::format("model '{}' is served by other agents of this location, "
                                         "but {} did not answer: {}",
                                         model, tried, last_failure.message())));
}

Result<http::ClientResponse> RestForwarder::Send(const Peer& peer, const http::Request& request,
                                                 std::string& body) {
  PERCH_ASSIGN_OR_RETURN(auto client, TakeClient(peer.url));
  http::ClientRequest forwarded;
  forwarded.method = request.method;
  std::string_view base = peer.url;
  if (base.ends_with('/')) {
    base.remove_suffix(1);  // the target starts with its own '/'
  }
  forwarded.url = std::string(base) + request.target;
  for (const std::string_view name : kRequestHeaders) {
    if (auto value = request.headers.Get(name)) {
      forwarded.headers.Set(name, std::string(*value));
    }
  }
  if (!options_.device.empty()) {
    forwarded.headers.Set(kForwardedByHeader, options_.device);
  }
  if (const std::string token = peers_.Token(); !token.empty()) {
    forwarded.headers.Set("Authorization", "Bearer " + token);
  }
  // Moved there and back, so that a second attempt can send it again.
  forwarded.body = std::move(body);
  forwarded.max_body_bytes = max_body_bytes_;
  auto answer = client->Send(forwarded);
  body = std::move(forwarded.body);
  // A client whose transfer failed may hold a broken connection: drop it.
  if (answer.ok()) {
    ReturnClient(peer.url, std::move(client));
  }
  return answer;
}

Result<std::unique_ptr<http::Client>> RestForwarder::TakeClient(const std::string& origin) {
  {
    MutexLock lock(mutex_);
    if (auto it = idle_.find(origin); it != idle_.end() && !it->second.empty()) {
      auto client = std::move(it->second.back());
      it->second.pop_back();
      return client;
    }
  }
  return http::Client::Create(http::ClientOptions{
      .ca_file = options_.ca_file,
      .connect_timeout = options_.connect_timeout,
      .read_timeout = options_.timeout,
      .user_agent = "perch-forwarder",
  });
}

void RestForwarder::ReturnClient(const std::string& origin, std::unique_ptr<http::Client> client) {
  MutexLock lock(mutex_);
  auto& idle = idle_[origin];
  if (idle.size() < kIdlePerPeer) {
    idle.push_back(std::move(client));
  }
}

}  // namespace perch::api
