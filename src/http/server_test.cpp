#include "http/server.h"

#include <arpa/inet.h>
#include <brotli/encode.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "http/errors.h"
#include "http/server_core.h"

namespace perch::http {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

struct RawResponse {
  int status = 0;
  Headers headers;
  std::string body;
};

// A client on a raw socket, so that tests can send exactly the bytes a
// misbehaving client sends. Every read gives up after 5 s: a test never hangs.
class RawClient {
 public:
  explicit RawClient(int port) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    timeval timeout{.tv_sec = 5, .tv_usec = 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port));
    inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
    connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0;
  }
  ~RawClient() { close(fd_); }
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;

  bool connected() const { return connected_; }

  bool Send(std::string_view bytes) {
    while (!bytes.empty()) {
      const ssize_t sent = send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (sent <= 0) {
        return false;
      }
      bytes.remove_prefix(static_cast<size_t>(sent));
    }
    return true;
  }

  // One answer: the head, then Content-Length bytes of body (none for HEAD).
  std::optional<RawResponse> Read(bool head_request = false) {
    size_t end = 0;
    while ((end = buffer_.find("\r\n\r\n")) == std::string::npos) {
      if (!Fill()) {
        return std::nullopt;
      }
    }
    RawResponse response;
    const std::string head = buffer_.substr(0, end + 2);
    buffer_.erase(0, end + 4);
    response.status = std::atoi(head.substr(9, 3).c_str());
    size_t line = head.find("\r\n") + 2;
    while (line < head.size()) {
      const size_t next = head.find("\r\n", line);
      const std::string field = head.substr(line, next - line);
      const size_t colon = field.find(':');
      response.headers.Add(field.substr(0, colon), field.substr(colon + 2));
      line = next + 2;
    }
    if (response.status == 100) {
      return response;
    }
    const size_t length = head_request ? 0
                                       : std::stoul(response.headers.Value("Content-Length").empty()
                                                        ? "0"
                                                        : response.headers.Value("Content-Length"));
    while (buffer_.size() < length) {
      if (!Fill()) {
        return std::nullopt;
      }
    }
    response.body = buffer_.substr(0, length);
    buffer_.erase(0, length);
    return response;
  }

  // True when the server closed the connection (within the read timeout).
  bool ClosedByServer() {
    char byte = 0;
    const ssize_t got = recv(fd_, &byte, 1, 0);
    return got == 0 || (got < 0 && errno == ECONNRESET);
  }

 private:
  bool Fill() {
    char chunk[65536];
    const ssize_t got = recv(fd_, chunk, sizeof(chunk), 0);
    if (got <= 0) {
      return false;
    }
    buffer_.append(chunk, static_cast<size_t>(got));
    return true;
  }

  int fd_ = -1;
  bool connected_ = false;
  std::string buffer_;
};

std::optional<RawResponse> Exchange(int port, const std::string& request,
                                    bool head_request = false) {
  RawClient client(port);
  if (!client.Send(request)) {
    return std::nullopt;
  }
  return client.Read(head_request);
}

std::string Gzip(const std::string& data) {
  z_stream stream{};
  deflateInit2(&stream, Z_BEST_COMPRESSION, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&stream, static_cast<uLong>(data.size())), '\0');
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  stream.avail_in = static_cast<uInt>(data.size());
  stream.next_out = reinterpret_cast<Bytef*>(out.data());
  stream.avail_out = static_cast<uInt>(out.size());
  deflate(&stream, Z_FINISH);
  out.resize(stream.total_out);
  deflateEnd(&stream);
  return out;
}

std::string Brotli(const std::string& data) {
  size_t size = BrotliEncoderMaxCompressedSize(data.size());
  std::string out(size, '\0');
  BrotliEncoderCompress(BROTLI_DEFAULT_QUALITY, BROTLI_DEFAULT_WINDOW, BROTLI_MODE_GENERIC,
                        data.size(), reinterpret_cast<const uint8_t*>(data.data()), &size,
                        reinterpret_cast<uint8_t*>(out.data()));
  out.resize(size);
  return out;
}

std::string Post(std::string_view path, const std::string& body, std::string_view extra = "") {
  return fmt::format("POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n{}\r\n{}", path,
                     body.size(), extra, body);
}

class ServerTest : public testing::Test {
 protected:
  void StartServer(ServerOptions options = {}) {
    auto created = Server::Create(std::move(options), Logger::ToStderr(LogLevel::kWarn, "http"));
    ASSERT_TRUE(created.ok()) << created.status().ToString();
    server_ = std::move(created).value();
    server_->Route("GET", "/hello", [](Request& request, Response& response) {
      response.SetBody("hello " + request.remote_address, "text/plain");
    });
    server_->Route("GET", "/models/([^/]+)/versions/([0-9]+)",
                   [](Request& request, Response& response) {
                     response.SetBody(fmt::format("{}|{}|{}|{}", request.match(1), request.match(2),
                                                  request.param("q").value_or("-"), request.path),
                                      "text/plain");
                   });
    server_->Route("POST", "/echo",
                   [](Request& request, Response& response) {
                     response.SetBody(request.body, "application/octet-stream");
                     response.headers.Set("X-Encoding", request.headers.Value("Content-Encoding"));
                   },
                   {.max_body_bytes = 1 << 20});
    server_->Route("POST", "/shaped", [](Request&, Response&) {},
                   {.max_body_bytes = 16,
                    .error_answer = [](Response& response, int http_status, const Status& error) {
                      response.SetBody(fmt::format("shaped {} {}", http_status, error.message()),
                                       "text/plain");
                    }});
    server_->Route("POST", "/stream",
                   [this](Request& request, Response& response) {
                     uint64_t total = 0;
                     uint64_t sum = 0;
                     for (;;) {
                       auto piece = request.stream->Next();
                       if (!piece.ok()) {
                         const std::lock_guard lock(mutex_);
                         stream_error_ = piece.status();
                         SetError(response, piece.status());
                         return;
                       }
                       if (piece->empty()) {
                         break;
                       }
                       total += piece->size();
                       for (const char c : *piece) {
                         sum += static_cast<unsigned char>(c);
                       }
                     }
                     response.SetBody(fmt::format("{} {}", total, sum), "text/plain");
                   },
                   {.body = BodyMode::kStreamed, .max_body_bytes = 8 << 20});
    server_->Route("GET", "/big", [](Request&, Response& response) {
      response.content = StreamedContent{
          .length = 3'000'000,
          .read = [](uint64_t offset, char* buffer, size_t capacity) -> Result<size_t> {
            for (size_t i = 0; i < capacity; ++i) {
              buffer[i] = static_cast<char>('a' + (offset + i) % 26);
            }
            return capacity;
          }};
    });
    server_->Route("GET", "/nothing", [](Request&, Response& response) {
      response.status = 204;
      response.body = "never sent";
    });
    server_->Route("GET", "/throw",
                   [](Request&, Response&) { throw std::runtime_error("handler bug"); });
    server_->Route("GET", "/slow", [](Request&, Response& response) {
      std::this_thread::sleep_for(300ms);
      response.SetBody("slow", "text/plain");
    });
    ASSERT_TRUE(server_->Start().ok());
    port_ = server_->port();
  }

  Status stream_error() {
    const std::lock_guard lock(mutex_);
    return stream_error_;
  }

  std::unique_ptr<Server> server_;
  int port_ = 0;
  std::mutex mutex_;
  Status stream_error_;  // guarded by mutex_: what the /stream handler's last Next() failed with
};

TEST_F(ServerTest, RoutesByFullMatchOfTheDecodedPathWithGroupsAndQuery) {
  StartServer();
  auto response = Exchange(port_, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->body.rfind("hello 127.0.0.1:", 0), 0u) << response->body;
  EXPECT_EQ(response->headers.Value("Server"), "perch");

  response = Exchange(port_, "GET /models/a%20b/versions/7?q=x%2By+z&q=last HTTP/1.1\r\n\r\n");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->body, "a b|7|last|/models/a b/versions/7");

  // Full match only: a longer path is another path.
  response = Exchange(port_, "GET /hello/more HTTP/1.1\r\n\r\n");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 404);
}

TEST(LiteralPrefixTest, StopsAtTheFirstSpecialCharacterAndLeavesQuantifiedOnesOut) {
  EXPECT_EQ(LiteralPrefix("/v2/models/([^/]+)/infer"), "/v2/models/");
  EXPECT_EQ(LiteralPrefix("/hello"), "/hello");
  EXPECT_EQ(LiteralPrefix("/ab?c"), "/a");
  EXPECT_EQ(LiteralPrefix("/ab*"), "/a");
  EXPECT_EQ(LiteralPrefix("/ab{2}"), "/a");
  EXPECT_EQ(LiteralPrefix("/a\\.b"), "/a");
  EXPECT_EQ(LiteralPrefix("/x|/y"), "");
  EXPECT_EQ(LiteralPrefix(".*"), "");
}

TEST_F(ServerTest, RoutesWhosePatternsQuantifyOrAlternateStillMatch) {
  auto created = Server::Create({}, Logger::ToStderr(LogLevel::kWarn, "http"));
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  server_ = std::move(created).value();
  server_->Route("GET", "/ab?c",
                 [](Request&, Response& response) { response.SetBody("optional", "text/plain"); });
  server_->Route("GET", "/x|/y",
                 [](Request&, Response& response) { response.SetBody("either", "text/plain"); });
  ASSERT_TRUE(server_->Start().ok());
  port_ = server_->port();
  for (const auto& [path, body] : std::vector<std::pair<std::string, std::string>>{
           {"/ac", "optional"}, {"/abc", "optional"}, {"/x", "either"}, {"/y", "either"}}) {
    auto response = Exchange(port_, fmt::format("GET {} HTTP/1.1\r\n\r\n", path));
    ASSERT_TRUE(response) << path;
    EXPECT_EQ(response->status, 200) << path;
    EXPECT_EQ(response->body, body) << path;
  }
}

TEST_F(ServerTest, UnknownPathIs404AndOtherMethodIs405WithAllowInJson) {
  StartServer();
  auto response = Exchange(port_, "GET /nope HTTP/1.1\r\n\r\n");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 404);
  EXPECT_EQ(response->headers.Value("Content-Type"), "application/json");
  EXPECT_NE(response->body.find("\"code\":\"NotFound\""), std::string::npos) << response->body;

  response = Exchange(port_, "DELETE /hello HTTP/1.1\r\n\r\n");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 405);
  EXPECT_EQ(response->headers.Value("Allow"), "GET, HEAD");
  EXPECT_NE(response->body.find("\"error\""), std::string::npos);

  response = Exchange(port_, "GET /bad%zz HTTP/1.1\r\n\r\n");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 400);
}

TEST_F(ServerTest, DeclaredLengthOverTheLimitIs413BeforeAnyBodyByte) {
  StartServer();
  RawClient client(port_);
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(client.Send("POST /echo HTTP/1.1\r\nContent-Length: 100000000\r\n\r\nabc"));
  auto response = client.Read();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 413);
  EXPECT_NE(response->body.find("ResourceExhausted"), std::string::npos);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
  EXPECT_TRUE(client.ClosedByServer());
}

TEST_F(ServerTest, ARouteMayShapeTheErrorsTheServerAnswersForIt) {
  StartServer();
  auto response = Exchange(port_, "POST /shaped HTTP/1.1\r\nContent-Length: 17\r\n\r\n");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 413);
  EXPECT_EQ(response->headers.Value("Content-Type"), "text/plain");
  EXPECT_EQ(response->body.rfind("shaped 413 ", 0), 0u) << response->body;
  // Before a route matched, the server's own shape.
  response = Exchange(port_, "POST /unknown HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 404);
  EXPECT_EQ(response->headers.Value("Content-Type"), "application/json");
}

TEST_F(ServerTest, BodiesAreCountedAfterDecompression) {
  StartServer();
  const std::string text(200'000, 'x');
  auto response = Exchange(port_, Post("/echo", Gzip(text), "Content-Encoding: gzip\r\n"));
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->body, text);
  EXPECT_EQ(response->headers.Value("X-Encoding"), "") << "the handler sees the decoded body";

  response = Exchange(port_, Post("/echo", Brotli(text), "Content-Encoding: br\r\n"));
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->body, text);

  // A bomb: 20 KB of gzip that inflates to 20 MB, over the route's 1 MiB.
  const std::string bomb = Gzip(std::string(20 << 20, '\0'));
  ASSERT_LT(bomb.size(), 100'000u);
  response = Exchange(port_, Post("/echo", bomb, "Content-Encoding: gzip\r\n"));
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 413);

  response = Exchange(port_, Post("/echo", "not gzip", "Content-Encoding: gzip\r\n"));
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 400);

  response = Exchange(port_, Post("/echo", "not br", "Content-Encoding: br\r\n"));
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 400);

  response = Exchange(port_, Post("/echo", "abc", "Content-Encoding: zstd\r\n"));
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 415);
}

TEST_F(ServerTest, ChunkedBodiesAreReadAndBoundedAsTheyArrive) {
  StartServer();
  auto response = Exchange(port_,
                           "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                           "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->body, "hello world");

  RawClient client(port_);
  ASSERT_TRUE(client.Send("POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"));
  const std::string chunk = fmt::format("{:x}\r\n{}\r\n", 300'000, std::string(300'000, 'y'));
  for (int i = 0; i < 4; ++i) {
    if (!client.Send(chunk)) {
      break;  // the server may close once the limit is passed
    }
  }
  response = client.Read();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 413);
}

TEST_F(ServerTest, PostWithoutLengthOrChunkingHasAnEmptyBody) {
  StartServer();
  RawClient client(port_);
  ASSERT_TRUE(client.Send("POST /echo HTTP/1.1\r\nHost: x\r\n\r\n"));
  auto response = client.Read();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->body, "");
  // And the connection goes on.
  ASSERT_TRUE(client.Send("GET /hello HTTP/1.1\r\n\r\n"));
  response = client.Read();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
}

TEST_F(ServerTest, HeadIsAnsweredByGetRoutesWithHeadersOnly) {
  StartServer();
  RawClient client(port_);
  ASSERT_TRUE(client.Send("HEAD /big HTTP/1.1\r\n\r\n"));
  auto response = client.Read(/*head_request=*/true);
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->headers.Value("Content-Length"), "3000000");
  // No body followed: the next answer on the connection starts cleanly.
  ASSERT_TRUE(client.Send("GET /hello HTTP/1.1\r\n\r\n"));
  response = client.Read();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->body.rfind("hello", 0), 0u);
}

TEST_F(ServerTest, NoContentAnswersCarryNoBody) {
  StartServer();
  RawClient client(port_);
  ASSERT_TRUE(client.Send("GET /nothing HTTP/1.1\r\n\r\n"));
  auto response = client.Read();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 204);
  EXPECT_FALSE(response->headers.Has("Content-Length"));
  ASSERT_TRUE(client.Send("GET /hello HTTP/1.1\r\n\r\n"));
  response = client.Read();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->body.rfind("hello", 0), 0u);
}

TEST_F(ServerTest, ExpectContinueIsAnsweredBeforeTheBody) {
  StartServer();
  RawClient client(port_);
  ASSERT_TRUE(
      client.Send("POST /echo HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"));
  auto interim = client.Read();
  ASSERT_TRUE(interim);
  EXPECT_EQ(interim->status, 100);
  ASSERT_TRUE(client.Send("12345"));
  auto response = client.Read();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->body, "12345");
}

// Large bodies are read 64 KiB at a time with the socket's low-water mark
// raised; a body whose last bytes come later, fewer than 64 KiB, and a
// second request on the same connection must not wait for bytes that never
// come (the server's body timeout is 30 s; the client gives up after 5).
TEST_F(ServerTest, LargeBodyWithAShortTailArrivesWhole) {
  StartServer();
  RawClient client(port_);
  const size_t size = 200'000;
  std::string body(size, '\0');
  for (size_t i = 0; i < size; ++i) {
    body[i] = static_cast<char>('a' + i % 26);
  }
  for (int round = 0; round < 2; ++round) {
    ASSERT_TRUE(
        client.Send(fmt::format("POST /echo HTTP/1.1\r\nContent-Length: {}\r\n\r\n", size)));
    ASSERT_TRUE(client.Send(std::string_view(body).substr(0, size - 10)));
    // Not synchronisation: it makes the tail likely to arrive on its own.
    std::this_thread::sleep_for(50ms);
    ASSERT_TRUE(client.Send(std::string_view(body).substr(size - 10)));
    auto response = client.Read();
    ASSERT_TRUE(response) << "round " << round;
    EXPECT_EQ(response->status, 200);
    EXPECT_EQ(response->body, body);
  }
  auto small = Exchange(port_, "POST /echo HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc");
  ASSERT_TRUE(small);
  EXPECT_EQ(small->body, "abc");
}

TEST_F(ServerTest, StreamedBodyReachesTheHandlerPieceByPiece) {
  StartServer();
  RawClient client(port_);
  const size_t size = 3 << 20;
  ASSERT_TRUE(
      client.Send(fmt::format("POST /stream HTTP/1.1\r\nContent-Length: {}\r\n\r\n", size)));
  std::string body(size, '\0');
  uint64_t sum = 0;
  for (size_t i = 0; i < size; ++i) {
    body[i] = static_cast<char>(i % 251);
    sum += i % 251;
  }
  std::thread sender([&] {
    for (size_t offset = 0; offset < size; offset += 100'000) {
      client.Send(std::string_view(body).substr(offset, 100'000));
    }
  });
  auto response = client.Read();
  sender.join();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->body, fmt::format("{} {}", size, sum));
}

TEST_F(ServerTest, StreamedBodyThatStallsFailsTheHandlersRead) {
  ServerOptions options;
  options.body_timeout = 300ms;
  StartServer(options);
  RawClient client(port_);
  ASSERT_TRUE(client.Send("POST /stream HTTP/1.1\r\nContent-Length: 1000\r\n\r\nabc"));
  // The stalled client is disconnected; the handler learns why.
  EXPECT_TRUE(client.ClosedByServer());
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (stream_error().ok() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(stream_error().code(), StatusCode::kUnavailable);
  EXPECT_NE(stream_error().message().find("no body bytes within 300 ms"), std::string::npos)
      << stream_error().message();
}

TEST_F(ServerTest, StreamedAnswerIsWrittenPieceByPiece) {
  StartServer();
  auto response = Exchange(port_, "GET /big HTTP/1.1\r\n\r\n");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
  ASSERT_EQ(response->body.size(), 3'000'000u);
  for (size_t i = 0; i < response->body.size(); i += 99'991) {
    ASSERT_EQ(response->body[i], static_cast<char>('a' + i % 26)) << i;
  }
}

TEST_F(ServerTest, HandlerExceptionAnswers500AndTheServerGoesOn) {
  StartServer();
  auto response = Exchange(port_, "GET /throw HTTP/1.1\r\n\r\n");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 500);
  EXPECT_NE(response->body.find("\"code\":\"Internal\""), std::string::npos);
  EXPECT_NE(response->body.find("handler bug"), std::string::npos);
  response = Exchange(port_, "GET /hello HTTP/1.1\r\n\r\n");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
}

TEST_F(ServerTest, ARouteMayRunItsHandlerOnTheIoThread) {
  std::mutex mutex;
  std::thread::id asked_on;    // guarded by mutex: where run_inline was asked
  std::thread::id handled_on;  // guarded by mutex
  auto created = Server::Create({}, Logger::ToStderr(LogLevel::kWarn, "http"));
  ASSERT_TRUE(created.ok());
  server_ = std::move(created).value();
  server_->Route("POST", "/maybe-inline",
                 [&](Request& request, Response& response) {
                   if (request.body == "throw") {
                     throw std::runtime_error("inline bug");
                   }
                   const std::lock_guard lock(mutex);
                   handled_on = std::this_thread::get_id();
                   response.SetBody(request.body, "text/plain");
                 },
                 {.run_inline = [&](const Request& request) {
                   const std::lock_guard lock(mutex);
                   asked_on = std::this_thread::get_id();
                   return request.body != "pool";
                 }});
  ASSERT_TRUE(server_->Start().ok());
  const auto handled_where = [&](const std::string& body) {
    const auto response = Exchange(server_->port(), Post("/maybe-inline", body));
    EXPECT_TRUE(response && response->status == 200 && response->body == body);
    const std::lock_guard lock(mutex);
    return asked_on == handled_on;
  };
  EXPECT_TRUE(handled_where("inline"));
  EXPECT_FALSE(handled_where("pool"));
  // An inline handler's exception is answered as a handler thread's is.
  const auto response = Exchange(server_->port(), Post("/maybe-inline", "throw"));
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 500);
  EXPECT_NE(response->body.find("inline bug"), std::string::npos);
  EXPECT_TRUE(handled_where("inline"));
}

TEST_F(ServerTest, HalfAHeadIsDisconnectedAfterTheHeaderTimeout) {
  ServerOptions options;
  options.header_timeout = 200ms;
  StartServer(options);
  RawClient client(port_);
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(client.Send("GET /hello HTTP/1.1\r\nHost: "));
  EXPECT_TRUE(client.ClosedByServer());
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
}

TEST_F(ServerTest, TrickledHeadIsDisconnectedAtTheHeaderDeadlineNotPerByte) {
  ServerOptions options;
  options.header_timeout = 500ms;
  StartServer(options);
  RawClient client(port_);
  ASSERT_TRUE(client.Send("GET /hello HTTP/1.1\r\n"));
  const auto start = std::chrono::steady_clock::now();
  bool closed = false;
  for (int i = 0; i < 40 && !closed; ++i) {
    closed = !client.Send("X-Slow: 1\r\n");
    std::this_thread::sleep_for(50ms);
    closed = closed || std::chrono::steady_clock::now() - start > 1500ms;
  }
  EXPECT_TRUE(client.ClosedByServer());
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2500ms);
}

TEST_F(ServerTest, RequestsThatAreNotHttpAre400AndClosed) {
  StartServer();
  for (const std::string request :
       {"hello there\r\n\r\n", "GET /hello HTTP/9.9\r\n\r\n",
        "POST /echo HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        "5\r\nhello\r\n0\r\n\r\n",
        "POST /echo HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        "POST /echo HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        "GET http://elsewhere/hello HTTP/1.1\r\n\r\n", "GET /hel%00lo HTTP/1.1\r\n\r\n",
        "GET /hello?a=%zz HTTP/1.1\r\n\r\n"}) {
    RawClient client(port_);
    ASSERT_TRUE(client.Send(request));
    auto response = client.Read();
    ASSERT_TRUE(response) << request;
    EXPECT_EQ(response->status, 400) << request;
    EXPECT_NE(response->body.find("InvalidArgument"), std::string::npos) << request;
  }
  auto response = Exchange(port_, "GET /hello HTTP/1.1\r\n\r\n");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
}

TEST_F(ServerTest, LongPathsAreRoutedUpTo4KiBAnd414Past) {
  StartServer();
  const std::string name(4000, 'n');
  auto response = Exchange(port_, "GET /models/" + name + "/versions/1 HTTP/1.1\r\n\r\n");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->body.substr(0, 10), name.substr(0, 10));
  response = Exchange(port_, "GET /" + name + " HTTP/1.1\r\n\r\n");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 404);
  // Past 4 KiB (decoded), a path is refused before any regular expression sees it.
  response = Exchange(port_, "GET /models/" + std::string(15'000, 'n') + " HTTP/1.1\r\n\r\n");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 414);
  EXPECT_NE(response->body.find("InvalidArgument"), std::string::npos);
}

TEST_F(ServerTest, OversizedHeadIs431) {
  ServerOptions options;
  options.max_header_bytes = 2048;
  StartServer(options);
  auto response =
      Exchange(port_, "GET /hello HTTP/1.1\r\nX-Big: " + std::string(4096, 'a') + "\r\n\r\n");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 431);
}

TEST_F(ServerTest, ConnectionsPastTheCapGet503) {
  ServerOptions options;
  options.max_connections = 2;
  StartServer(options);
  RawClient first(port_);
  RawClient second(port_);
  ASSERT_TRUE(first.Send("GET /hello HTTP/1.1\r\n\r\n"));
  ASSERT_TRUE(first.Read());
  ASSERT_TRUE(second.Send("GET /hello HTTP/1.1\r\n\r\n"));
  ASSERT_TRUE(second.Read());
  auto response = Exchange(port_, "GET /hello HTTP/1.1\r\n\r\n");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 503);
  EXPECT_NE(response->body.find("Unavailable"), std::string::npos);
  EXPECT_EQ(response->headers.Value("Connection"), "close");
}

TEST_F(ServerTest, KeepAliveReusesTheConnectionAndCloseIsHonoured) {
  StartServer();
  RawClient client(port_);
  std::string first_remote;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(client.Send("GET /hello HTTP/1.1\r\n\r\n"));
    auto response = client.Read();
    ASSERT_TRUE(response);
    EXPECT_EQ(response->status, 200);
    if (i == 0) {
      first_remote = response->body;
    }
    EXPECT_EQ(response->body, first_remote) << "the same connection, the same client port";
  }
  // Pipelined: both answered, in order.
  ASSERT_TRUE(
      client.Send("GET /slow HTTP/1.1\r\n\r\nGET /hello HTTP/1.1\r\nConnection: close\r\n\r\n"));
  auto slow = client.Read();
  ASSERT_TRUE(slow);
  EXPECT_EQ(slow->body, "slow");
  auto last = client.Read();
  ASSERT_TRUE(last);
  EXPECT_EQ(last->headers.Value("Connection"), "close");
  EXPECT_TRUE(client.ClosedByServer());
}

TEST_F(ServerTest, StopWaitsForHandlersInFlight) {
  StartServer();
  RawClient client(port_);
  ASSERT_TRUE(client.Send("GET /slow HTTP/1.1\r\n\r\n"));
  std::this_thread::sleep_for(100ms);  // lets the request reach its handler
  server_->Stop();
  auto response = client.Read();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->body, "slow");
  RawClient refused(port_);
  EXPECT_FALSE(refused.connected());
}

TEST(ServerOptionsTest, CreateRefusesOptionsThatCannotWork) {
  const Logger logger = Logger::ToStderr(LogLevel::kOff);
  ServerOptions options;
  options.io_threads = 0;
  EXPECT_EQ(Server::Create(options, logger).status().code(), StatusCode::kInvalidArgument);
  options = {};
  options.tls.key_file = "/tmp/key.pem";
  EXPECT_EQ(Server::Create(options, logger).status().code(), StatusCode::kInvalidArgument);
  options = {};
  options.tls.cert_file = "/nonexistent/cert.pem";
  options.tls.key_file = "/nonexistent/key.pem";
  const Status missing = Server::Create(options, logger).status();
  EXPECT_EQ(missing.code(), StatusCode::kNotFound);
  EXPECT_NE(missing.message().find("/nonexistent/cert.pem"), std::string::npos);
}

TEST(ServerBindTest, AnAddressInUseIsUnavailable) {
  const Logger logger = Logger::ToStderr(LogLevel::kOff);
  auto first = Server::Create({}, logger);
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE((*first)->Start().ok());
  ServerOptions options;
  options.port = (*first)->port();
  auto second = Server::Create(options, logger);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ((*second)->Start().code(), StatusCode::kUnavailable);
}

// --- TLS -------------------------------------------------------------------

namespace asio = boost::asio;

void Shell(const std::string& command) {
  ASSERT_EQ(std::system((command + " 2>/dev/null >/dev/null").c_str()), 0) << command;
}

// A CA, a server certificate for 127.0.0.1 and a client certificate, made
// with the openssl CLI once for all TLS tests.
class TlsTest : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::path(testing::TempDir()) / fmt::format("http_tls_test_{}", getpid());
    fs::create_directories(dir_);
    const std::string d = dir_.string();
    Shell(
        fmt::format("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=test-ca "
                    "-keyout {0}/ca.key -out {0}/ca.pem",
                    d));
    for (const std::string name : {"server", "client"}) {
      Shell(
          fmt::format("openssl req -newkey rsa:2048 -nodes -subj /CN={1} -keyout {0}/{1}.key "
                      "-out {0}/{1}.csr",
                      d, name));
      std::ofstream(dir_ / (name + ".ext"))
          << (name == "server" ? "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                               : "extendedKeyUsage=clientAuth\n");
      Shell(
          fmt::format("openssl x509 -req -in {0}/{1}.csr -CA {0}/ca.pem -CAkey {0}/ca.key "
                      "-CAcreateserial -days 2 -extfile {0}/{1}.ext -out {0}/{1}.pem",
                      d, name));
    }
    Shell(
        fmt::format("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=other "
                    "-keyout {0}/other.key -out {0}/other.pem",
                    d));
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  static std::string File(const std::string& name) { return (dir_ / name).string(); }

  void StartTls(bool mutual) {
    ServerOptions options;
    options.tls.cert_file = File("server.pem");
    options.tls.key_file = File("server.key");
    if (mutual) {
      options.tls.client_ca_file = File("ca.pem");
    }
    auto created = Server::Create(options, Logger::ToStderr(LogLevel::kOff));
    ASSERT_TRUE(created.ok()) << created.status().ToString();
    server_ = std::move(created).value();
    server_->Route("GET", "/hello", [](Request& request, Response& response) {
      response.SetBody(request.tls ? "hello tls" : "hello plain", "text/plain");
    });
    ASSERT_TRUE(server_->Start().ok());
    EXPECT_EQ(server_->scheme(), "https");
  }

  // GET /hello over TLS; the answer's body, or the error that stopped it.
  std::string TlsGet(const std::string& ca, const std::string& client_cert = "") {
    asio::io_context io;
    asio::ssl::context context(asio::ssl::context::tls_client);
    context.load_verify_file(ca);
    context.set_verify_mode(asio::ssl::verify_peer);
    if (!client_cert.empty()) {
      context.use_certificate_chain_file(File(client_cert + ".pem"));
      context.use_private_key_file(File(client_cert + ".key"), asio::ssl::context::pem);
    }
    asio::ssl::stream<asio::ip::tcp::socket> stream(io, context);
    stream.set_verify_callback(asio::ssl::host_name_verification("127.0.0.1"));
    boost::system::error_code ec;
    stream.next_layer().connect(
        {asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(server_->port())}, ec);
    if (!ec) {
      stream.handshake(asio::ssl::stream_base::client, ec);
    }
    if (ec) {
      return "error: " + ec.message();
    }
    const std::string request = "GET /hello HTTP/1.1\r\nConnection: close\r\n\r\n";
    asio::write(stream, asio::buffer(request), ec);
    std::string answer;
    for (;;) {
      char chunk[4096];
      const size_t got = stream.read_some(asio::buffer(chunk), ec);
      answer.append(chunk, got);
      if (ec) {
        break;
      }
    }
    const size_t body = answer.find("\r\n\r\n");
    if (answer.rfind("HTTP/1.1 200", 0) != 0 || body == std::string::npos) {
      return "error: " + ec.message();
    }
    return answer.substr(body + 4);
  }

  static fs::path dir_;
  std::unique_ptr<Server> server_;
};

fs::path TlsTest::dir_;

TEST_F(TlsTest, ServesOverTlsAndRefusesPlainHttp) {
  StartTls(false);
  EXPECT_EQ(TlsGet(File("ca.pem")), "hello tls");
  // Plain HTTP on the TLS port: no HTTP answer, the connection is closed.
  RawClient plain(server_->port());
  ASSERT_TRUE(plain.Send("GET /hello HTTP/1.1\r\n\r\n"));
  EXPECT_FALSE(plain.Read());
  // A client that does not trust the server's CA refuses it.
  EXPECT_EQ(TlsGet(File("other.pem")).rfind("error", 0), 0u);
}

TEST_F(TlsTest, MutualTlsRefusesClientsWithoutACertificateFromTheCa) {
  StartTls(true);
  EXPECT_EQ(TlsGet(File("ca.pem"), "client"), "hello tls");
  EXPECT_EQ(TlsGet(File("ca.pem")).rfind("error", 0), 0u);
  EXPECT_EQ(TlsGet(File("ca.pem"), "other").rfind("error", 0), 0u);
}

TEST_F(TlsTest, CreateNamesTheTlsFileThatIsWrong) {
  ServerOptions options;
  options.tls.cert_file = File("server.pem");
  options.tls.key_file = File("client.key");
  Status status = Server::Create(options, Logger::ToStderr(LogLevel::kOff)).status();
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("does not belong"), std::string::npos) << status.message();

  options.tls.cert_file = File("server.ext");
  options.tls.key_file = File("server.key");
  status = Server::Create(options, Logger::ToStderr(LogLevel::kOff)).status();
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("server.ext"), std::string::npos) << status.message();
}

}  // namespace
}  // namespace perch::http
