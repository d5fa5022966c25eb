#include "peers/peer_directory.h"

#include <gtest/gtest.h>

namespace perch {
namespace {

Peer MakePeer(std::string device, std::vector<std::string> models,
              std::vector<std::string> blobs = {}) {
  return Peer{.device = device,
              .url = "http://127.0.0.1:1/" + device,
              .grpc_address = {},
              .models = std::move(models),
              .blobs = std::move(blobs)};
}

class PeerDirectoryTest : public ::testing::Test {
 protected:
  ManualClock clock_;
  PeerDirectory directory_{PeerDirectoryOptions{
      .self_device = "self", .avoid_for = std::chrono::seconds(30), .clock = clock_.AsWallClock()}};
};

TEST_F(PeerDirectoryTest, ListsPeersOfEverySourceButItself) {
  directory_.Replace("hub", {MakePeer("a", {"m"}), MakePeer("self", {"m"})});
  directory_.Replace("static", {MakePeer("b", {})});
  const auto peers = directory_.Peers();
  ASSERT_EQ(peers.size(), 2u);
  EXPECT_EQ(peers[0].device, "a");
  EXPECT_EQ(peers[1].device, "b");
  directory_.Replace("hub", {});
  EXPECT_EQ(directory_.Peers().size(), 1u);
}

TEST_F(PeerDirectoryTest, AcquirePicksTheLeastLoadedPeerServingTheModel) {
  directory_.Replace("hub", {MakePeer("a", {"m"}), MakePeer("b", {"m"}), MakePeer("c", {"x"})});
  auto first = directory_.Acquire("m");
  ASSERT_TRUE(first.has_value());
  auto second = directory_.Acquire("m");
  ASSERT_TRUE(second.has_value());
  EXPECT_NE(first->peer().device, second->peer().device);
  const std::string freed = first->peer().device;
  first.reset();
  auto third = directory_.Acquire("m");
  ASSERT_TRUE(third.has_value());
  EXPECT_EQ(third->peer().device, freed);
  EXPECT_FALSE(directory_.Acquire("nobody").has_value());
}

TEST_F(PeerDirectoryTest, AFailedPeerIsAvoidedUntilItsTimeIsUp) {
  directory_.Replace("hub", {MakePeer("a", {"m"}, {"sha256:1"})});
  directory_.MarkFailed("a");
  EXPECT_FALSE(directory_.Acquire("m").has_value());
  EXPECT_TRUE(directory_.HoldersOf("sha256:1").empty());
  EXPECT_TRUE(directory_.AnyServes("m"));
  clock_.Advance(std::chrono::seconds(31));
  EXPECT_TRUE(directory_.Acquire("m").has_value());
  EXPECT_EQ(directory_.HoldersOf("sha256:1").size(), 1u);
}

TEST_F(PeerDirectoryTest, HoldersThatNeverFailedComeFirst) {
  directory_.Replace("hub", {MakePeer("a", {}, {"sha256:1"}), MakePeer("b", {}, {"sha256:1"})});
  directory_.MarkFailed("a");
  directory_.MarkHealthy("a");
  const auto holders = directory_.HoldersOf("sha256:1");
  ASSERT_EQ(holders.size(), 2u);
  EXPECT_EQ(holders[0].device, "b");
}

TEST_F(PeerDirectoryTest, ADeviceNamedByTwoSourcesIsTakenFromTheNewerReport) {
  directory_.Replace("static", {MakePeer("a", {"old"})});
  directory_.Replace("hub", {MakePeer("a", {"new"})});
  ASSERT_EQ(directory_.Peers().size(), 1u);
  EXPECT_EQ(directory_.Peers()[0].models, std::vector<std::string>{"new"});
  directory_.Replace("static", {MakePeer("a", {"newest"})});
  EXPECT_EQ(directory_.Peers()[0].models, std::vector<std::string>{"newest"});
}

TEST_F(PeerDirectoryTest, AvailableLeavesOutAvoidedPeers) {
  directory_.Replace("static", {MakePeer("a", {}), MakePeer("b", {})});
  directory_.MarkFailed("a");
  auto available = directory_.Available();
  ASSERT_EQ(available.size(), 1u);
  EXPECT_EQ(available[0].device, "b");
  clock_.Advance(std::chrono::seconds(31));
  EXPECT_EQ(directory_.Available().size(), 2u);
}

TEST_F(PeerDirectoryTest, HoldsTheTokenAndWhereThisAgentIsReached) {
  EXPECT_EQ(directory_.Token(), "");
  directory_.SetToken("t1");
  EXPECT_EQ(directory_.Token(), "t1");
  directory_.SetToken("t2");  // the hub issued another
  EXPECT_EQ(directory_.Token(), "t2");
  directory_.SetSelf("http://10.0.0.1:8000", "10.0.0.1:8001");
  const Peer self = directory_.Self();
  EXPECT_EQ(self.device, "self");
  EXPECT_EQ(self.url, "http://10.0.0.1:8000");
  EXPECT_EQ(self.grpc_address, "10.0.0.1:8001");
}

}  // namespace
}  // namespace perch
