#include "mqtt/tcp_probe.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

namespace perch::mqtt {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

// A loopback listener with an accept queue of `backlog`; its port.
class Listener {
 public:
  explicit Listener(int backlog) : fd_(socket(AF_INET, SOCK_STREAM, 0)) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    EXPECT_EQ(listen(fd_, backlog), 0);
    socklen_t length = sizeof(address);
    getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &length);
    port_ = ntohs(address.sin_port);
  }
  ~Listener() {
    for (const int filler : fillers_) {
      close(filler);
    }
    close(fd_);
  }
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;
  int port() const { return port_; }

  // Fills the accept queue of a listener made with backlog 0 (one
  // connection) and nobody accepting: the kernel then drops SYNs, as an
  // address behind a firewall that drops them does.
  void Fill() {
    const int filler = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = htons(static_cast<uint16_t>(port_));
    (void)connect(filler, reinterpret_cast<sockaddr*>(&address), sizeof(address));
    fillers_.push_back(filler);
    pollfd done{.fd = filler, .events = POLLOUT, .revents = 0};
    ASSERT_EQ(poll(&done, 1, 2000), 1) << "the filling connection did not open";
  }

 private:
  const int fd_;
  int port_ = 0;
  std::vector<int> fillers_;
};

bool Never() { return false; }

TEST(TcpProbeTest, AnOpenPortOpens) {
  const Listener listener(16);
  EXPECT_TRUE(ProbeTcp("127.0.0.1", listener.port(), milliseconds(2000), Never).ok());
}

TEST(TcpProbeTest, ARefusedPortFailsAtOnce) {
  int port = 0;
  {
    const Listener gone(1);
    port = gone.port();
  }
  const auto start = Clock::now();
  const Status probed = ProbeTcp("127.0.0.1", port, milliseconds(5000), Never);
  EXPECT_EQ(probed.code(), StatusCode::kUnavailable);
  EXPECT_NE(probed.message().find("refused"), std::string::npos) << probed.message();
  EXPECT_LT(Clock::now() - start, milliseconds(1000));
}

TEST(TcpProbeTest, AnAddressThatDropsConnectionsFailsWithinTheTimeout) {
  Listener full(0);
  full.Fill();
  const auto start = Clock::now();
  const Status probed = ProbeTcp("127.0.0.1", full.port(), milliseconds(500), Never);
  const auto took = Clock::now() - start;
  EXPECT_EQ(probed.code(), StatusCode::kUnavailable) << probed.message();
  EXPECT_NE(probed.message().find("no answer within 0.5 s"), std::string::npos) << probed.message();
  EXPECT_GE(took, milliseconds(450));
  EXPECT_LT(took, milliseconds(1500));
}

TEST(TcpProbeTest, StoppingEndsAProbeWithinAPollSlice) {
  Listener full(0);
  full.Fill();
  std::atomic<bool> stop{false};
  std::thread stopper([&] {
    std::this_thread::sleep_for(milliseconds(300));
    stop = true;
  });
  const auto start = Clock::now();
  const Status probed =
      ProbeTcp("127.0.0.1", full.port(), milliseconds(60000), [&] { return stop.load(); });
  const auto took = Clock::now() - start;
  stopper.join();
  EXPECT_EQ(probed.code(), StatusCode::kCancelled) << probed.message();
  EXPECT_LT(took, milliseconds(1500));
}

}  // namespace
}  // namespace perch::mqtt
