// The HTTP client against real servers on loopback: a Python HTTP/1.1
// server (tests/tools/http_test_server.py), plain and TLS, and raw sockets
// for the servers that misbehave.
#include "http/client.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace perch::http {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;

// The test server in a child process; killed when this goes out of scope.
class TestServer {
 public:
  explicit TestServer(const std::vector<std::string>& extra = {}) {
    int pipe_fds[2];
    if (pipe(pipe_fds) != 0) {
      ADD_FAILURE() << "pipe failed";
      return;
    }
    std::vector<std::string> args = {"/usr/bin/python3",
                                     PERCH_SOURCE_DIR "/tests/tools/http_test_server.py"};
    args.insert(args.end(), extra.begin(), extra.end());
    std::vector<char*> argv;
    for (auto& arg : args) {
      argv.push_back(arg.data());
    }
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, pipe_fds[0]);
    const int spawned = posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    close(pipe_fds[1]);
    if (spawned != 0) {
      close(pipe_fds[0]);
      ADD_FAILURE() << "cannot start the test server";
      pid_ = 0;
      return;
    }
    // The first line is the port; a server that does not say it in 30 s fails the test.
    std::string line;
    const auto deadline = SteadyClock::now() + std::chrono::seconds(30);
    while (line.find('\n') == std::string::npos && SteadyClock::now() < deadline) {
      pollfd readable{pipe_fds[0], POLLIN, 0};
      if (poll(&readable, 1, 1000) <= 0) {
        continue;
      }
      char buffer[64];
      const ssize_t got = read(pipe_fds[0], buffer, sizeof buffer);
      if (got <= 0) {
        break;
      }
      line.append(buffer, static_cast<size_t>(got));
    }
    close(pipe_fds[0]);
    port_ = std::atoi(line.c_str());
    if (port_ <= 0) {
      ADD_FAILURE() << "the test server did not report its port: '" << line << "'";
    }
  }
  ~TestServer() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  TestServer(const TestServer&) = delete;
  TestServer& operator=(const TestServer&) = delete;

  int port() const { return port_; }
  std::string Url(const std::string& path, const std::string& scheme = "http") const {
    return scheme + "://127.0.0.1:" + std::to_string(port_) + path;
  }

 private:
  pid_t pid_ = 0;
  int port_ = 0;
};

// A listening socket that never accepts: connections complete in the
// kernel and then nothing is ever answered.
class SilentServer {
 public:
  SilentServer() {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t size = sizeof address;
    if (bind(fd_, reinterpret_cast<sockaddr*>(&address), size) != 0 || listen(fd_, 16) != 0 ||
        getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &size) != 0) {
      ADD_FAILURE() << "cannot listen on loopback";
    }
    port_ = ntohs(address.sin_port);
  }
  ~SilentServer() { close(fd_); }
  SilentServer(const SilentServer&) = delete;
  SilentServer& operator=(const SilentServer&) = delete;
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

// A loopback port nothing listens on.
int ClosedPort() {
  SilentServer server;
  return server.port();
}

std::unique_ptr<Client> MakeClient(ClientOptions options = {}) {
  auto client = Client::Create(std::move(options));
  EXPECT_TRUE(client.ok()) << client.status().ToString();
  return client.ok() ? std::move(client).value() : nullptr;
}

ClientRequest Get(const std::string& url) {
  ClientRequest request;
  request.url = url;
  return request;
}

fs::path TempDir(const std::string& name) {
  const fs::path dir =
      fs::temp_directory_path() / ("perch_client_test_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

TEST(ClientTest, KeepsTheConnectionAliveBetweenCalls) {
  TestServer server;
  auto client = MakeClient();
  auto first = client->Send(Get(server.Url("/port")));
  auto second = client->Send(Get(server.Url("/port")));
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_EQ(first->status, 200);
  EXPECT_FALSE(first->body.empty());
  EXPECT_EQ(first->body, second->body) << "the second call opened a new connection";
  // A second client has its own connection.
  auto other = MakeClient()->Send(Get(server.Url("/port")));
  ASSERT_TRUE(other.ok());
  EXPECT_NE(other->body, first->body);
}

// A link that flapped between two calls: the kept-alive connection is gone
// (closed or reset), and the next call must not fail on it but go out on a
// new one, a body included, whether or not the client saw the cut before.
TEST(ClientTest, AKeptAliveConnectionCutBetweenCallsIsNotReusedIntoAFailure) {
  for (const std::string reset : {"0", "1"}) {
    SCOPED_TRACE("reset=" + reset);
    TestServer server;
    auto client = MakeClient();
    for (int call = 0; call < 5; ++call) {
      auto dropped = client->Send(Get(server.Url("/drop?reset=" + reset)));
      ASSERT_TRUE(dropped.ok()) << dropped.status().ToString();
      ClientRequest post;
      post.method = "POST";
      post.url = server.Url("/echo");
      post.body = "after the cut";
      auto posted = client->Send(post);
      ASSERT_TRUE(posted.ok()) << posted.status().ToString();
      EXPECT_EQ(posted->status, 200);
      EXPECT_NE(posted->body.find("\"length\": 13"), std::string::npos) << posted->body;
    }
  }
}

// The connection dies while the next call is still sending its body: what
// libcurl itself does not send again (it does when a reused connection
// fails at the first read).
TEST(ClientTest, AKeptAliveConnectionResetWhileSendingIsSentAgainOnANewOne) {
  TestServer server;
  auto client = MakeClient();
  for (int call = 0; call < 3; ++call) {
    auto kept = client->Send(Get(server.Url("/drop-next")));
    ASSERT_TRUE(kept.ok()) << kept.status().ToString();
    ClientRequest post;
    post.method = "POST";
    post.url = server.Url("/echo");
    post.body.assign(size_t{8} << 20, 'x');  // more than the socket buffers take at once
    auto posted = client->Send(post);
    ASSERT_TRUE(posted.ok()) << posted.status().ToString();
    EXPECT_NE(posted->body.find("\"length\": 8388608"), std::string::npos) << posted->body;
  }
}

TEST(ClientTest, CollectsEveryResponseHeaderKeepingRepeatedOnes) {
  TestServer server;
  auto response = MakeClient()->Send(Get(server.Url("/headers")));
  ASSERT_TRUE(response.ok()) << response.status().ToString();
  std::vector<std::string> cookies;
  for (const auto& [name, value] : response->headers.fields()) {
    if (name == "Set-Cookie") {
      cookies.push_back(value);
    }
  }
  EXPECT_EQ(cookies, (std::vector<std::string>{"a=1", "b=2"}));
  EXPECT_EQ(response->headers.Value("x-one"), "spaced");
  EXPECT_EQ(response->headers.Value("Content-Length"), "2");
  EXPECT_EQ(response->body, "ok");
  EXPECT_EQ(response->url, server.Url("/headers"));
}

TEST(ClientTest, StreamsTheBodyPieceByPieceAfterTheHead) {
  TestServer server;
  ClientRequest request = Get(server.Url("/stream?pieces=5&size=20000"));
  int head_status = 0;
  std::string length;
  std::string streamed;
  int pieces = 0;
  request.on_head = [&](int status, const Headers& headers) {
    head_status = status;
    length = headers.Value("Content-Length");
    EXPECT_TRUE(streamed.empty()) << "on_head after the body started";
    return true;
  };
  request.on_body = [&](std::string_view piece) {
    streamed.append(piece);
    ++pieces;
    return true;
  };
  uint64_t last_done = 0;
  uint64_t last_total = 0;
  request.progress = [&](uint64_t done, uint64_t total) {
    last_done = done;
    last_total = total;
  };
  auto response = MakeClient()->Send(request);
  ASSERT_TRUE(response.ok()) << response.status().ToString();
  EXPECT_EQ(head_status, 200);
  EXPECT_EQ(length, "100000");
  EXPECT_EQ(streamed.size(), 100000u);
  EXPECT_GT(pieces, 1);
  EXPECT_TRUE(response->body.empty());
  EXPECT_EQ(streamed.substr(0, 3), "aaa");
  EXPECT_EQ(streamed.substr(99997), "eee");
  EXPECT_EQ(last_total, 100000u);
  EXPECT_EQ(last_done, 100000u);
}

TEST(ClientTest, AReceiveBufferBoundsEachPieceAndDoesNotOutliveItsCall) {
  TestServer server;
  auto client = MakeClient();
  for (const size_t buffer : {size_t{64} << 10, size_t{0}}) {
    ClientRequest request = Get(server.Url("/stream?pieces=5&size=200000"));
    request.receive_buffer_bytes = buffer;
    std::string streamed;
    size_t largest = 0;
    request.on_body = [&](std::string_view piece) {
      streamed.append(piece);
      largest = std::max(largest, piece.size());
      return true;
    };
    auto response = client->Send(request);
    ASSERT_TRUE(response.ok()) << response.status().ToString();
    ASSERT_EQ(streamed.size(), 1'000'000u);
    EXPECT_EQ(streamed.substr(0, 3), "aaa");
    EXPECT_EQ(streamed.substr(999'997), "eee");
    // 0: libcurl's own 16 KiB again on the same handle.
    EXPECT_LE(largest, buffer > 0 ? buffer : size_t{16} << 10) << "buffer " << buffer;
  }
}

TEST(ClientTest, OnBodyStoppingIsCancelledAndTheClientStaysUsable) {
  TestServer server;
  auto client = MakeClient();
  ClientRequest request = Get(server.Url("/stream?pieces=50&size=10000"));
  request.on_body = [](std::string_view) { return false; };
  auto response = client->Send(request);
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.status().code(), StatusCode::kCancelled) << response.status().ToString();
  auto after = client->Send(Get(server.Url("/port")));
  ASSERT_TRUE(after.ok()) << after.status().ToString();
  EXPECT_EQ(after->status, 200);
}

TEST(ClientTest, OnHeadStoppingReturnsTheHeadWithoutTheBody) {
  TestServer server;
  ClientRequest request = Get(server.Url("/stream?pieces=50&size=10000"));
  request.on_head = [](int, const Headers&) { return false; };
  bool body_seen = false;
  request.on_body = [&](std::string_view) {
    body_seen = true;
    return true;
  };
  auto response = MakeClient()->Send(request);
  ASSERT_TRUE(response.ok()) << response.status().ToString();
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->headers.Value("Content-Length"), "500000");
  EXPECT_FALSE(body_seen);
}

TEST(ClientTest, ABodyOverTheLimitIsResourceExhausted) {
  TestServer server;
  ClientRequest request = Get(server.Url("/stream?pieces=4&size=1000"));
  request.max_body_bytes = 3999;
  auto response = MakeClient()->Send(request);
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(response.status().message().find("3999"), std::string::npos)
      << response.status().message();
  request.max_body_bytes = 4000;
  auto fits = MakeClient()->Send(request);
  ASSERT_TRUE(fits.ok()) << fits.status().ToString();
  EXPECT_EQ(fits->body.size(), 4000u);
}

TEST(ClientTest, HeadGetsTheHeadersAndNoBody) {
  TestServer server;
  auto client = MakeClient();
  ClientRequest request = Get(server.Url("/stream?pieces=3&size=7"));
  request.method = "HEAD";
  auto response = client->Send(request);
  ASSERT_TRUE(response.ok()) << response.status().ToString();
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->headers.Value("Content-Length"), "21");
  EXPECT_TRUE(response->body.empty());
  // The connection is still in step with the server.
  auto after = client->Send(Get(server.Url("/stream?pieces=1&size=5")));
  ASSERT_TRUE(after.ok()) << after.status().ToString();
  EXPECT_EQ(after->body, "aaaaa");
}

TEST(ClientTest, UploadsASliceOfAFileWithItsExactLengthUnchunked) {
  TestServer server;
  const fs::path dir = TempDir("upload");
  std::string content;
  for (int i = 0; i < 300000; ++i) {
    content += static_cast<char>('a' + i % 26);
  }
  std::ofstream(dir / "blob", std::ios::binary) << content;
  ClientRequest request;
  request.method = "PUT";
  request.url = server.Url("/echo");
  request.file = FileSlice{dir / "blob", 1000, 200000};
  request.headers.Set("Content-Type", "application/octet-stream");
  uint64_t last_done = 0;
  request.progress = [&](uint64_t done, uint64_t total) {
    last_done = done;
    EXPECT_EQ(total, 200000u);
  };
  auto response = MakeClient()->Send(request);
  ASSERT_TRUE(response.ok()) << response.status().ToString();
  EXPECT_EQ(response->status, 200);
  const std::string& body = response->body;
  EXPECT_NE(body.find("\"method\": \"PUT\""), std::string::npos) << body;
  EXPECT_NE(body.find("\"length\": 200000"), std::string::npos) << body;
  EXPECT_NE(body.find("\"chunked\": false"), std::string::npos) << body;
  EXPECT_NE(body.find("\"expect\": null"), std::string::npos) << body;
  EXPECT_NE(body.find("\"content_type\": \"application/octet-stream\""), std::string::npos) << body;
  EXPECT_EQ(last_done, 200000u);
  fs::remove_all(dir);
}

TEST(ClientTest, ASliceBeyondTheFileIsRefusedBeforeSending) {
  TestServer server;
  const fs::path dir = TempDir("short_file");
  std::ofstream(dir / "blob", std::ios::binary) << "0123456789";
  ClientRequest request;
  request.method = "PUT";
  request.url = server.Url("/echo");
  request.file = FileSlice{dir / "blob", 5, 6};
  auto response = MakeClient()->Send(request);
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.status().code(), StatusCode::kInvalidArgument);
  request.file = FileSlice{dir / "missing", 0, 1};
  response = MakeClient()->Send(request);
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.status().code(), StatusCode::kNotFound);
  fs::remove_all(dir);
}

TEST(ClientTest, SendsMemoryBodiesAndEmptyPostsWithAContentLength) {
  TestServer server;
  auto client = MakeClient();
  ClientRequest request;
  request.method = "POST";
  request.url = server.Url("/echo");
  request.body = "hello";
  request.headers.Set("Authorization", "Bearer t");
  auto response = client->Send(request);
  ASSERT_TRUE(response.ok()) << response.status().ToString();
  EXPECT_NE(response->body.find("\"length\": 5"), std::string::npos) << response->body;
  EXPECT_NE(response->body.find("\"authorization\": \"Bearer t\""), std::string::npos);
  // No form content type the caller did not ask for.
  EXPECT_NE(response->body.find("\"content_type\": null"), std::string::npos) << response->body;
  request.body.clear();
  response = client->Send(request);
  ASSERT_TRUE(response.ok()) << response.status().ToString();
  EXPECT_NE(response->body.find("\"length\": 0"), std::string::npos) << response->body;
  request.method = "DELETE";
  response = client->Send(request);
  ASSERT_TRUE(response.ok()) << response.status().ToString();
  EXPECT_NE(response->body.find("\"method\": \"DELETE\""), std::string::npos) << response->body;
}

TEST(ClientTest, RefusesHeadersThatWouldSplitTheRequest) {
  TestServer server;
  ClientRequest request = Get(server.Url("/port"));
  request.headers.Set("X-Evil", "a\r\nHost: elsewhere");
  auto response = MakeClient()->Send(request);
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(response.status().message().find("X-Evil"), std::string::npos);
}

TEST(ClientTest, AnErrorStatusIsAResponseNotAFailure) {
  TestServer server;
  auto response = MakeClient()->Send(Get(server.Url("/status?code=404")));
  ASSERT_TRUE(response.ok()) << response.status().ToString();
  EXPECT_EQ(response->status, 404);
  EXPECT_NE(response->body.find("as asked"), std::string::npos);
}

TEST(ClientTest, FollowsRedirectsOnlyWhenAskedAndAtMostFive) {
  TestServer server;
  auto client = MakeClient();
  auto unfollowed = client->Send(Get(server.Url("/redirect?n=2")));
  ASSERT_TRUE(unfollowed.ok()) << unfollowed.status().ToString();
  EXPECT_EQ(unfollowed->status, 302);
  EXPECT_EQ(unfollowed->headers.Value("Location"), "/redirect?n=1");

  ClientRequest request = Get(server.Url("/redirect?n=5"));
  request.follow_redirects = true;
  auto followed = client->Send(request);
  ASSERT_TRUE(followed.ok()) << followed.status().ToString();
  EXPECT_EQ(followed->status, 200);
  EXPECT_EQ(followed->url, server.Url("/port"));
  EXPECT_FALSE(followed->headers.Has("Location")) << "headers of a redirect were kept";

  request.url = server.Url("/redirect?n=6");
  auto too_many = client->Send(request);
  ASSERT_FALSE(too_many.ok());
  EXPECT_EQ(too_many.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(too_many.status().message().find("redirects"), std::string::npos);

  // Never for a method with a body.
  ClientRequest post;
  post.method = "POST";
  post.url = server.Url("/redirect?n=1");
  post.follow_redirects = true;
  auto posted = client->Send(post);
  ASSERT_TRUE(posted.ok()) << posted.status().ToString();
  EXPECT_EQ(posted->url, post.url);
}

TEST(ClientTest, ConnectionRefusedIsUnavailableNamingTheUrl) {
  const int port = ClosedPort();
  auto response = MakeClient()->Send(Get("http://127.0.0.1:" + std::to_string(port) + "/x"));
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.status().code(), StatusCode::kUnavailable);
  const std::string& message = response.status().message();
  EXPECT_NE(message.find("http://127.0.0.1:" + std::to_string(port)), std::string::npos) << message;
  EXPECT_NE(message.find("connection refused"), std::string::npos) << message;
}

TEST(ClientTest, AnUnknownHostIsUnavailableSayingDns) {
  auto response = MakeClient()->Send(Get("http://no-such-host.invalid/"));
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(response.status().message().find("DNS"), std::string::npos)
      << response.status().message();
}

TEST(ClientTest, AServerThatNeverAnswersTimesOutWithinTheReadTimeout) {
  SilentServer server;
  auto client = MakeClient(ClientOptions{.read_timeout = milliseconds(500)});
  const auto start = SteadyClock::now();
  auto response = client->Send(Get("http://127.0.0.1:" + std::to_string(server.port()) + "/"));
  const auto took = SteadyClock::now() - start;
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(response.status().message().find("sent nothing for 500 ms"), std::string::npos)
      << response.status().message();
  EXPECT_GE(took, milliseconds(500));
  // libcurl looks at a silent transfer about once a second.
  EXPECT_LT(took, milliseconds(2500));
}

// A component that stops (the fleet agent on SIGTERM) must not wait out a
// minute-long read timeout on a link that went silent.
TEST(ClientTest, AStopEndsACallWaitingOnASilentServerAndRefusesLaterOnes) {
  SilentServer server;
  std::stop_source stop;
  auto client =
      MakeClient(ClientOptions{.read_timeout = milliseconds(60'000), .stop = stop.get_token()});
  const auto start = SteadyClock::now();
  std::jthread stopper([&stop] {
    std::this_thread::sleep_for(milliseconds(300));
    stop.request_stop();
  });
  const std::string url = "http://127.0.0.1:" + std::to_string(server.port()) + "/";
  auto response = client->Send(Get(url));
  const auto took = SteadyClock::now() - start;
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.status().code(), StatusCode::kCancelled) << response.status().ToString();
  EXPECT_NE(response.status().message().find("shutting down"), std::string::npos)
      << response.status().message();
  // libcurl looks at a silent transfer about once a second.
  EXPECT_LT(took, milliseconds(2500));

  const auto again = SteadyClock::now();
  auto later = client->Send(Get(url));
  ASSERT_FALSE(later.ok());
  EXPECT_EQ(later.status().code(), StatusCode::kCancelled);
  EXPECT_LT(SteadyClock::now() - again, milliseconds(100));
}

TEST(ClientTest, ASilentAnswerTimesOutOnAKeptAliveConnection) {
  TestServer server;
  auto client = MakeClient(ClientOptions{.read_timeout = milliseconds(600)});
  auto first = client->Send(Get(server.Url("/port")));
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  const auto start = SteadyClock::now();
  auto response = client->Send(Get(server.Url("/stall-head")));
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(response.status().message().find("read timeout"), std::string::npos)
      << response.status().message();
  EXPECT_LT(SteadyClock::now() - start, milliseconds(2500));
}

TEST(ClientTest, ABodyThatStallsTimesOutOnAKeptAliveConnectionToo) {
  TestServer server;
  auto client = MakeClient(ClientOptions{.read_timeout = milliseconds(700)});
  auto first = client->Send(Get(server.Url("/port")));
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  const auto start = SteadyClock::now();
  auto response = client->Send(Get(server.Url("/stall-body")));
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.status().code(), StatusCode::kUnavailable);
  EXPECT_LT(SteadyClock::now() - start, milliseconds(3000));
}

TEST(ClientTest, ATruncatedAnswerIsUnavailable) {
  TestServer server;
  auto response = MakeClient()->Send(Get(server.Url("/short")));
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(response.status().message().find("ended before"), std::string::npos)
      << response.status().message();
}

TEST(ClientTest, RefusesMissingTlsFilesAndNonHttpUrls) {
  auto missing = Client::Create(ClientOptions{.ca_file = "/nonexistent/ca.pem"});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(missing.status().message().find("/nonexistent/ca.pem"), std::string::npos);
  auto response = MakeClient()->Send(Get("ftp://127.0.0.1/"));
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.status().code(), StatusCode::kInvalidArgument);
}

class TlsTest : public ::testing::Test {
 protected:
  TlsTest() : dir_(TempDir("tls")), server_({"--tls", dir_.string()}) {}
  ~TlsTest() override { fs::remove_all(dir_); }
  std::string Ca() const { return (dir_ / "ca.pem").string(); }

  fs::path dir_;
  TestServer server_;
};

TEST_F(TlsTest, TrustsTheServerSignedByTheCaFile) {
  auto client = MakeClient(ClientOptions{.ca_file = Ca()});
  auto first = client->Send(Get(server_.Url("/port", "https")));
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ(first->status, 200);
  auto second = client->Send(Get(server_.Url("/port", "https")));
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_EQ(first->body, second->body) << "TLS connections are kept alive too";
}

TEST_F(TlsTest, RefusesTheServerWithoutTheCaSayingWhatToPass) {
  auto response = MakeClient()->Send(Get(server_.Url("/port", "https")));
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.status().code(), StatusCode::kUnavailable);
  const std::string& message = response.status().message();
  EXPECT_NE(message.find("not signed by a trusted CA"), std::string::npos) << message;
  EXPECT_NE(message.find("--ca-file"), std::string::npos) << message;
  EXPECT_NE(message.find(server_.Url("", "https")), std::string::npos) << message;
}

TEST_F(TlsTest, RefusesACertificateForAnotherHost) {
  // The certificate names 127.0.0.1, not localhost.
  auto response = MakeClient(ClientOptions{.ca_file = Ca()})
                      ->Send(Get("https://localhost:" + std::to_string(server_.port()) + "/port"));
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(response.status().message().find("does not name this host"), std::string::npos)
      << response.status().message();
}

TEST_F(TlsTest, PlainHttpToATlsPortSaysToUseHttps) {
  auto client = MakeClient(ClientOptions{.read_timeout = milliseconds(3000)});
  auto response = client->Send(Get(server_.Url("/port")));
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(response.status().message().find("https://"), std::string::npos)
      << response.status().message();
}

TEST(ClientTlsTest, HttpsToAPlainPortSaysItAnswersPlainHttp) {
  TestServer server;
  auto response = MakeClient()->Send(Get(server.Url("/port", "https")));
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(response.status().message().find("plain HTTP"), std::string::npos)
      << response.status().message();
}

}  // namespace
}  // namespace perch::http

namespace perch::http {
namespace {

class MutualTlsTest : public ::testing::Test {
 protected:
  MutualTlsTest() : dir_(TempDir("mtls")), server_({"--tls", dir_.string(), "--mtls"}) {}
  ~MutualTlsTest() override { fs::remove_all(dir_); }
  std::string File(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
  TestServer server_;
};

TEST_F(MutualTlsTest, PresentsTheClientCertificate) {
  auto client = MakeClient(ClientOptions{
      .ca_file = File("ca.pem"), .cert_file = File("client.pem"), .key_file = File("client.key")});
  auto response = client->Send(Get(server_.Url("/port", "https")));
  ASSERT_TRUE(response.ok()) << response.status().ToString();
  EXPECT_EQ(response->status, 200);
}

TEST_F(MutualTlsTest, WithoutACertificateTheServerRefusesTheClient) {
  auto response = MakeClient(ClientOptions{.ca_file = File("ca.pem")})
                      ->Send(Get(server_.Url("/port", "https")));
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.status().code(), StatusCode::kUnavailable) << response.status().ToString();
  EXPECT_NE(response.status().message().find(server_.Url("", "https")), std::string::npos)
      << response.status().message();
  EXPECT_NE(response.status().message().find("client certificate"), std::string::npos)
      << response.status().message();
}

}  // namespace
}  // namespace perch::http
