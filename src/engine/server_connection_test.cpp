#include "engine/server_connection.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <thread>

namespace perch {
namespace {

using Clock = ServerConnection::Clock;
using std::chrono::milliseconds;

// A loopback server that reads one request and writes `answer` (then
// closes when `close_after` is set).
class OneShotServer {
 public:
  OneShotServer(std::string answer, bool close_after, milliseconds linger = milliseconds(300)) {
    listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    EXPECT_EQ(::bind(listener_, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    EXPECT_EQ(::getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &length), 0);
    EXPECT_EQ(::listen(listener_, 1), 0);
    port_ = ntohs(address.sin_port);
    thread_ = std::thread([this, answer = std::move(answer), close_after, linger] {
      const int client = ::accept(listener_, nullptr, nullptr);
      std::string request;
      char buffer[4096];
      while (request.find("\r\n\r\n") == std::string::npos) {
        const ssize_t got = ::recv(client, buffer, sizeof(buffer), 0);
        if (got <= 0) {
          break;
        }
        request.append(buffer, static_cast<size_t>(got));
      }
      // Written in two pieces: the reader must join a header split apart.
      const size_t half = answer.size() / 2;
      (void)!::send(client, answer.data(), half, MSG_NOSIGNAL);
      std::this_thread::sleep_for(milliseconds(5));
      (void)!::send(client, answer.data() + half, answer.size() - half, MSG_NOSIGNAL);
      if (close_after) {
        ::close(client);
      } else {
        std::this_thread::sleep_for(linger);
        ::close(client);
      }
    });
  }
  ~OneShotServer() {
    thread_.join();
    ::close(listener_);
  }
  int port() const { return port_; }

 private:
  int listener_ = -1;
  int port_ = 0;
  std::thread thread_;
};

Result<ServerAnswer> PostTo(const OneShotServer& server, size_t max_body = 1 << 20,
                            milliseconds wait = milliseconds(2000)) {
  auto connection = ServerConnection::Open(server.port(), "", milliseconds(1000));
  if (!connection.ok()) {
    return connection.status();
  }
  return (*connection)
      ->Post("/v2/models/m/infer", R"({"inputs":[]})", Clock::now() + wait, max_body);
}

TEST(ServerConnectionTest, ReadsAContentLengthAnswer) {
  OneShotServer server("HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"outputs\"}", false);
  auto answer = PostTo(server);
  ASSERT_TRUE(answer.ok()) << answer.status().message();
  EXPECT_EQ(answer->status, 200);
  EXPECT_EQ(answer->body, "{\"outputs\"}");
}

TEST(ServerConnectionTest, ReadsAChunkedAnswer) {
  OneShotServer server(
      "HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nbad\r\n0\r\n\r\n", false);
  auto answer = PostTo(server);
  ASSERT_TRUE(answer.ok()) << answer.status().message();
  EXPECT_EQ(answer->status, 400);
  EXPECT_EQ(answer->body, "bad");
}

TEST(ServerConnectionTest, AnAnswerThatIsNotHttpIsUnavailable) {
  OneShotServer server("<html>not http at all</html>\r\n\r\n", true);
  auto answer = PostTo(server);
  ASSERT_FALSE(answer.ok());
  EXPECT_EQ(answer.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(answer.status().message().find("not HTTP"), std::string::npos);
}

TEST(ServerConnectionTest, AnAnswerOverTheLimitIsResourceExhausted) {
  OneShotServer server("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + std::string(100, 'x'),
                       true);
  auto answer = PostTo(server, 10);
  ASSERT_FALSE(answer.ok());
  EXPECT_EQ(answer.status().code(), StatusCode::kResourceExhausted);
}

TEST(ServerConnectionTest, AServerThatClosesWithoutAnAnswerIsUnavailable) {
  OneShotServer server("", true);
  auto answer = PostTo(server);
  ASSERT_FALSE(answer.ok());
  EXPECT_EQ(answer.status().code(), StatusCode::kUnavailable);
}

TEST(ServerConnectionTest, ATruncatedAnswerIsUnavailable) {
  OneShotServer server("HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort", true);
  auto answer = PostTo(server);
  ASSERT_FALSE(answer.ok());
  EXPECT_EQ(answer.status().code(), StatusCode::kUnavailable);
}

TEST(ServerConnectionTest, ASilentServerRunsIntoTheDeadline) {
  OneShotServer server("HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n", false, milliseconds(1500));
  const auto started = Clock::now();
  auto answer = PostTo(server, 1 << 20, milliseconds(100));
  ASSERT_FALSE(answer.ok());
  EXPECT_EQ(answer.status().code(), StatusCode::kDeadlineExceeded) << answer.status().message();
  EXPECT_LT(Clock::now() - started, milliseconds(1400));
}

// The wait bound a connection keeps from one request must not carry a
// longer wait into the next: a kept-alive connection answered first under a
// long deadline still gives up at the second request's short one.
TEST(ServerConnectionTest, AKeptAliveConnectionHoldsEachRequestsOwnDeadline) {
  const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(::getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length), 0);
  ASSERT_EQ(::listen(listener, 1), 0);
  std::thread server([listener] {
    const int client = ::accept(listener, nullptr, nullptr);
    char buffer[4096];
    (void)!::recv(client, buffer, sizeof(buffer), 0);  // the first request, answered
    const std::string answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
    (void)!::send(client, answer.data(), answer.size(), MSG_NOSIGNAL);
    (void)!::recv(client, buffer, sizeof(buffer), 0);  // the second: silence until perch closes
    (void)!::recv(client, buffer, sizeof(buffer), 0);
    ::close(client);
  });
  auto connection = ServerConnection::Open(ntohs(address.sin_port), "", milliseconds(1000));
  ASSERT_TRUE(connection.ok()) << connection.status().message();
  auto first = (*connection)->Post("/p", "{}", Clock::now() + std::chrono::seconds(30), 1 << 20);
  ASSERT_TRUE(first.ok()) << first.status().message();
  EXPECT_TRUE((*connection)->reusable());
  const auto started = Clock::now();
  auto second = (*connection)->Post("/p", "{}", Clock::now() + milliseconds(150), 1 << 20);
  EXPECT_EQ(second.status().code(), StatusCode::kDeadlineExceeded) << second.status().message();
  EXPECT_GE(Clock::now() - started, milliseconds(150));
  EXPECT_LT(Clock::now() - started, milliseconds(1000));
  connection->reset();  // closes: the server's last recv returns
  server.join();
  ::close(listener);
}

}  // namespace
}  // namespace perch
