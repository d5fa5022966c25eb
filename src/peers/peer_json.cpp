#include "peers/peer_json.h"

#include <nlohmann/json.hpp>

namespace perch {

using nlohmann::json;

std::string EncodePeer(const Peer& peer) {
  return json{{"device", peer.device},
              {"url", peer.url},
              {"grpc_address", peer.grpc_address},
              {"models", peer.models},
              {"blobs", peer.blobs}}
      .dump();
}

Result<Peer> DecodePeer(std::string_view text) {
  try {
    const json body = json::parse(text);
    Peer peer;
    peer.device = body.at("device").get<std::string>();
    peer.url = body.value("url", "");
    peer.grpc_address = body.value("grpc_address", "");
    peer.models = body.value("models", std::vector<std::string>{});
    peer.blobs = body.value("blobs", std::vector<std::string>{});
    if (peer.device.empty()) {
      return InvalidArgument("the peer answer names no device");
    }
    return peer;
  } catch (const json::exception& error) {
    return InvalidArgument(std::string("the peer answer is not a perch peer description: ") +
                           error.what());
  }
}

}  // namespace perch
