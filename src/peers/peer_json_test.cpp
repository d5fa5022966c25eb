#include "peers/peer_json.h"

#include <gtest/gtest.h>

#include "peers/static_peers.h"

namespace perch {
namespace {

TEST(PeerJsonTest, RoundTrips) {
  const Peer peer{.device = "edge-1",
                  .url = "http://10.0.0.1:8000",
                  .grpc_address = "10.0.0.1:8001",
                  .models = {"a", "b"},
                  .blobs = {"sha256:" + std::string(64, '0')}};
  auto decoded = DecodePeer(EncodePeer(peer));
  ASSERT_TRUE(decoded.ok()) << decoded.status().message();
  EXPECT_EQ(decoded->device, peer.device);
  EXPECT_EQ(decoded->url, peer.url);
  EXPECT_EQ(decoded->grpc_address, peer.grpc_address);
  EXPECT_EQ(decoded->models, peer.models);
  EXPECT_EQ(decoded->blobs, peer.blobs);
}

TEST(PeerJsonTest, RefusesWhatIsNotAPeer) {
  for (const char* body :
       {"", "[]", "{}", "not json", R"({"device": ""})", R"({"device": 7})",
        R"({"device": "a", "models": "m"})", R"({"device": "a", "blobs": [1]})"}) {
    EXPECT_EQ(DecodePeer(body).status().code(), StatusCode::kInvalidArgument) << body;
  }
  auto minimal = DecodePeer(R"({"device": "a"})");
  ASSERT_TRUE(minimal.ok());
  EXPECT_TRUE(minimal->url.empty() && minimal->models.empty());
}

TEST(PeerUrlTest, AcceptsBaseUrlsOnly) {
  EXPECT_EQ(*CheckPeerUrl("http://10.0.0.1:8000/", "--peer"), "http://10.0.0.1:8000");
  EXPECT_EQ(*CheckPeerUrl("https://[::1]:8000", "--peer"), "https://[::1]:8000");
  for (const char* url : {"", "10.0.0.1:8000", "ftp://a:1", "http://", "http://a:1/path",
                          "http://user@a:1", "http://a b:1", "http://a:1?x"}) {
    const auto checked = CheckPeerUrl(url, "--peer");
    EXPECT_EQ(checked.status().code(), StatusCode::kInvalidArgument) << url;
    EXPECT_NE(checked.status().message().find("--peer"), std::string::npos);
  }
}

}  // namespace
}  // namespace perch
