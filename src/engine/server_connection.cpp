#include "engine/server_connection.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <cerrno>
#include <cstring>
#include <limits>

namespace perch {
namespace {

namespace http = boost::beast::http;
using std::chrono::milliseconds;

constexpr size_t kMaxHeaderBytes = 8192;  // Beast's own limit for a header

int MillisecondsUntil(ServerConnection::Clock::time_point deadline) {
  const auto left =
      std::chrono::ceil<milliseconds>(deadline - ServerConnection::Clock::now()).count();
  return static_cast<int>(std::clamp<int64_t>(left, 0, 1 << 30));
}

// Waits for `events` on `fd` until `deadline`; false when it passed.
bool Await(int fd, short events, ServerConnection::Clock::time_point deadline) {
  for (;;) {
    pollfd entry{.fd = fd, .events = events, .revents = 0};
    const int ready = ::poll(&entry, 1, MillisecondsUntil(deadline));
    if (ready > 0) {
      return true;
    }
    if (ready == 0 || errno != EINTR) {
      return false;
    }
  }
}

}  // namespace

ServerConnection::~ServerConnection() { Close(); }

void ServerConnection::Close() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

Result<std::unique_ptr<ServerConnection>> ServerConnection::Open(int port,
                                                                 const std::string& unix_socket,
                                                                 milliseconds connect_timeout) {
  const bool local = !unix_socket.empty();
  const int fd = ::socket(local ? AF_UNIX : AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    return Unavailable(fmt::format("cannot open a socket: {}", std::strerror(errno)));
  }
  auto connection = std::unique_ptr<ServerConnection>(new ServerConnection(fd));
  sockaddr_storage address{};
  socklen_t length = 0;
  if (local) {
    auto* un = reinterpret_cast<sockaddr_un*>(&address);
    un->sun_family = AF_UNIX;
    if (unix_socket.size() >= sizeof(un->sun_path)) {
      return InvalidArgument(fmt::format("the socket path {} is too long", unix_socket));
    }
    std::memcpy(un->sun_path, unix_socket.c_str(), unix_socket.size() + 1);
    length = sizeof(sockaddr_un);
  } else {
    auto* in = reinterpret_cast<sockaddr_in*>(&address);
    in->sin_family = AF_INET;
    in->sin_port = htons(static_cast<uint16_t>(port));
    in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    length = sizeof(sockaddr_in);
    const int on = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
  }
  const std::string where = local ? unix_socket : fmt::format("127.0.0.1:{}", port);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), length) != 0) {
    if (errno != EINPROGRESS && errno != EAGAIN) {
      return Unavailable(fmt::format("cannot connect to {}: {}", where, std::strerror(errno)));
    }
    if (!Await(fd, POLLOUT, Clock::now() + connect_timeout)) {
      return Unavailable(fmt::format("cannot connect to {}: no answer within {} ms", where,
                                     connect_timeout.count()));
    }
    int error = 0;
    socklen_t size = sizeof(error);
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &size);
    if (error != 0) {
      return Unavailable(fmt::format("cannot connect to {}: {}", where, std::strerror(error)));
    }
  }
  // Receives block (bounded by SO_RCVTIMEO, see Post); sends do not
  // (MSG_DONTWAIT), so a server that stops reading cannot hold perch past
  // a deadline.
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
    return Unavailable(
        fmt::format("cannot configure the socket to {}: {}", where, std::strerror(errno)));
  }
  return connection;
}

bool ServerConnection::BoundReceiveWait(Clock::time_point deadline) {
  const auto left = std::chrono::ceil<std::chrono::microseconds>(deadline - Clock::now());
  if (left.count() <= 0) {
    return false;
  }
  // Set only when the bound is too long for this deadline, or so short
  // that the wait would wake more than twice: most requests set nothing.
  if (receive_bound_.count() > 0 && left >= receive_bound_ && left <= 2 * receive_bound_) {
    return true;
  }
  const timeval bound{.tv_sec = static_cast<time_t>(left.count() / 1000000),
                      .tv_usec = static_cast<suseconds_t>(left.count() % 1000000)};
  if (::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &bound, sizeof(bound)) != 0) {
    return false;
  }
  receive_bound_ = left;
  return true;
}

Result<ServerAnswer> ServerConnection::Post(std::string_view path, std::string_view body,
                                            Clock::time_point deadline, size_t max_body_bytes) {
  if (fd_ < 0) {
    return Unavailable("the connection to the model's server is closed");
  }
  // One write: a request split over two segments costs the server a second
  // read, and without TCP_NODELAY on its side a delayed-ACK stall.
  std::string request;
  request.reserve(path.size() + body.size() + 128);
  fmt::format_to(std::back_inserter(request),
                 "POST {} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: perch\r\n"
                 "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                 path, body.size());
  request.append(body);
  size_t sent = 0;
  while (sent < request.size()) {
    const ssize_t wrote =
        ::send(fd_, request.data() + sent, request.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (wrote > 0) {
      sent += static_cast<size_t>(wrote);
      continue;
    }
    if (wrote < 0 && errno == EINTR) {
      continue;
    }
    if (wrote < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!Await(fd_, POLLOUT, deadline)) {
        Close();
        return Status(StatusCode::kDeadlineExceeded,
                      "the model's server did not take the request in time");
      }
      continue;
    }
    const std::string reason = std::strerror(errno);
    Close();
    return Unavailable(fmt::format("sending to the model's server failed: {}", reason));
  }

  http::response_parser<http::string_body> parser;
  parser.eager(true);
  // Counted here instead, headers included (Boost 1.74's parser compares
  // its limit inconsistently).
  parser.body_limit(std::numeric_limits<uint64_t>::max());
  const size_t max_bytes = max_body_bytes + kMaxHeaderBytes;
  size_t received = 0;
  char buffer[16384];
  std::string pending;
  boost::beast::error_code error;
  while (!parser.is_done()) {
    // A blocking recv bounded by SO_RCVTIMEO: one call waits for the
    // answer and takes it, where poll + recv took two.
    if (!BoundReceiveWait(deadline)) {
      Close();
      return Status(StatusCode::kDeadlineExceeded, "the model's server did not answer in time");
    }
    const ssize_t got = ::recv(fd_, buffer, sizeof(buffer), 0);
    if (got < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) {
      continue;  // interrupted, or the wait bound passed: the deadline decides
    }
    if (got <= 0) {
      const std::string reason = got == 0 ? "it closed the connection" : std::strerror(errno);
      if (got == 0 && parser.got_some() && parser.need_eof()) {
        parser.put_eof(error);
        if (!error) {
          break;
        }
      }
      Close();
      return Unavailable(fmt::format("the model's server did not answer: {}", reason));
    }
    received += static_cast<size_t>(got);
    if (received > max_bytes) {
      Close();
      return ResourceExhausted(
          fmt::format("the model's server's answer is larger than {} bytes", max_body_bytes));
    }
    // Beast takes a header only whole: what it did not take stays pending.
    pending.append(buffer, static_cast<size_t>(got));
    while (!pending.empty() && !parser.is_done()) {
      const size_t used = parser.put(boost::asio::buffer(pending), error);
      pending.erase(0, used);
      if (error == http::error::need_more) {
        error = {};
        break;
      }
      if (error) {
        Close();
        return Unavailable(
            fmt::format("the model's server's answer is not HTTP: {}", error.message()));
      }
    }
  }
  auto message = parser.release();
  if (message.body().size() > max_body_bytes) {
    Close();
    return ResourceExhausted(
        fmt::format("the model's server's answer is larger than {} bytes", max_body_bytes));
  }
  if (!message.keep_alive() || !pending.empty()) {
    Close();
  }
  return ServerAnswer{.status = static_cast<int>(message.result_int()),
                      .body = std::move(message.body())};
}

}  // namespace perch
