#include <gtest/gtest.h>

#include "core/clock.h"
#include "fleet/fleet_json.h"
#include "fleet/fleet_store.h"

namespace perch {
namespace {

namespace fs = std::filesystem;

class FleetStorePeersTest : public testing::Test {
 protected:
  void SetUp() override {
    path_ = fs::path(testing::TempDir()) /
            (std::string("peers_") + testing::UnitTest::GetInstance()->current_test_info()->name() +
             ".db");
    fs::remove(path_);
    fs::remove(path_.string() + "-wal");
    fs::remove(path_.string() + "-shm");
    Reopen();
  }

  void Reopen() {
    store_.reset();
    auto store = FleetStore::Open({.database = path_, .clock = clock_.AsWallClock()});
    ASSERT_TRUE(store.ok()) << store.status().message();
    store_ = std::move(store).value();
  }

  std::string MakeLocation(const std::string& name) {
    auto created = store_->CreateLocation({.name = name, .description = "", .labels = {}});
    EXPECT_TRUE(created.ok()) << created.status().message();
    return created.ok() ? created->token : "";
  }

  void MakeDevice(const std::string& enrolment, const std::string& name) {
    auto enrolled = store_->Enrol(enrolment, {.name = name,
                                              .labels = {},
                                              .architecture = "amd64",
                                              .perch_version = "0.1.0",
                                              .addresses = {}});
    ASSERT_TRUE(enrolled.ok()) << enrolled.status().message();
  }

  void Beat(const std::string& device, const std::string& url) {
    Heartbeat heartbeat;
    heartbeat.models.push_back({.name = "ready-model",
                                .version = 1,
                                .reference = "r",
                                .digest = "",
                                .state = "READY",
                                .error = ""});
    heartbeat.models.push_back({.name = "loading-model",
                                .version = 1,
                                .reference = "r",
                                .digest = "",
                                .state = "LOADING",
                                .error = ""});
    heartbeat.advertise_url = url;
    heartbeat.grpc_address = "127.0.0.1:9001";
    heartbeat.blobs = {"sha256:" + std::string(64, 'a')};
    ASSERT_TRUE(store_->RecordHeartbeat(device, heartbeat).ok());
  }

  std::vector<std::string> PeerNames(const std::string& device) {
    auto peers = store_->PeersOf(device);
    EXPECT_TRUE(peers.ok()) << peers.status().message();
    std::vector<std::string> names;
    for (const LocationPeer& peer : peers->peers) {
      names.push_back(peer.device);
    }
    return names;
  }

  fs::path path_;
  ManualClock clock_{WallClock::TimePoint(std::chrono::seconds(1000))};
  std::unique_ptr<FleetStore> store_;
};

TEST_F(FleetStorePeersTest, ListsTheOtherOnlineDevicesOfTheLocation) {
  const std::string site = MakeLocation("site");
  const std::string far = MakeLocation("far");
  MakeDevice(site, "a");
  MakeDevice(site, "b");
  MakeDevice(site, "c");
  MakeDevice(far, "x");
  Beat("a", "http://a:8000");
  Beat("b", "http://b:8000");
  Beat("x", "http://x:8000");
  // c never sent a heartbeat: not online, not a peer.
  EXPECT_EQ(PeerNames("a"), std::vector<std::string>{"b"});
  auto peers = store_->PeersOf("a");
  ASSERT_TRUE(peers.ok());
  EXPECT_EQ(peers->location, "site");
  const LocationPeer& b = peers->peers.at(0);
  EXPECT_EQ(b.url, "http://b:8000");
  EXPECT_EQ(b.grpc_address, "127.0.0.1:9001");
  EXPECT_EQ(b.models, std::vector<std::string>{"ready-model"});
  EXPECT_EQ(b.blobs.size(), 1u);
  EXPECT_EQ(b.last_seen, 1000);
  EXPECT_TRUE(PeerNames("x").empty());

  // Silent past the online window: dropped; back with a heartbeat.
  clock_.Advance(std::chrono::seconds(31));
  Beat("a", "http://a:8000");
  EXPECT_TRUE(PeerNames("a").empty());
  Beat("b", "http://b:8000");
  EXPECT_EQ(PeerNames("a"), std::vector<std::string>{"b"});

  ASSERT_TRUE(store_->RevokeDevice("b").ok());
  EXPECT_TRUE(PeerNames("a").empty());
  EXPECT_EQ(store_->PeersOf("b").status().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(store_->PeersOf("nobody").status().code(), StatusCode::kNotFound);
}

TEST_F(FleetStorePeersTest, OnePeerTokenPerLocationKeptAcrossRestarts) {
  const std::string site = MakeLocation("site");
  const std::string far = MakeLocation("far");
  MakeDevice(site, "a");
  MakeDevice(site, "b");
  MakeDevice(far, "x");
  const std::string token = store_->PeersOf("a")->peer_token;
  EXPECT_GE(token.size(), 32u);
  EXPECT_EQ(store_->PeersOf("b")->peer_token, token);
  EXPECT_NE(store_->PeersOf("x")->peer_token, token);
  Reopen();
  EXPECT_EQ(store_->PeersOf("b")->peer_token, token);
}

TEST(FleetPeersJsonTest, HeartbeatAndPeersRoundTrip) {
  Heartbeat heartbeat;
  heartbeat.advertise_url = "http://10.0.0.1:8000";
  heartbeat.grpc_address = "10.0.0.1:8001";
  heartbeat.blobs = {"sha256:" + std::string(64, 'b')};
  auto parsed = ParseHeartbeat(ToJson(heartbeat));
  ASSERT_TRUE(parsed.ok()) << parsed.status().message();
  EXPECT_EQ(parsed->advertise_url, heartbeat.advertise_url);
  EXPECT_EQ(parsed->grpc_address, heartbeat.grpc_address);
  EXPECT_EQ(parsed->blobs, heartbeat.blobs);
  // An older agent's heartbeat has none of them.
  auto old = ParseHeartbeat(R"({"models": [], "errors": []})");
  ASSERT_TRUE(old.ok());
  EXPECT_TRUE(old->advertise_url.empty() && old->blobs.empty());
  EXPECT_EQ(ParseHeartbeat(R"({"blobs": "x"})").status().code(), StatusCode::kInvalidArgument);

  LocationPeers peers{.location = "site", .peer_token = "t", .peers = {}};
  LocationPeer peer;
  peer.device = "b";
  peer.url = "http://b:8000";
  peer.models = {"m"};
  peer.last_seen = 7;
  peers.peers.push_back(peer);
  auto round = ParseLocationPeers(ToJson(peers));
  ASSERT_TRUE(round.ok()) << round.status().message();
  EXPECT_EQ(round->location, "site");
  EXPECT_EQ(round->peer_token, "t");
  ASSERT_EQ(round->peers.size(), 1u);
  EXPECT_EQ(round->peers[0].device, "b");
  EXPECT_EQ(round->peers[0].models, std::vector<std::string>{"m"});
  EXPECT_EQ(round->peers[0].last_seen, 7);
  EXPECT_EQ(ParseLocationPeers(R"({"peers": [{"url": "x"}]})").status().code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace perch
