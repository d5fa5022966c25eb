// One kept-alive HTTP/1.1 connection from perch to a process model's own
// server (loopback TCP or a Unix socket), for the request path: a request
// goes out as one write (headers and body together, TCP_NODELAY) and the
// answer is read by a blocking receive (bounded by the deadline) into
// Beast's parser, so a call costs a send and a receive and no more. perch's
// general HTTP client (libcurl) polls and writes headers and body
// separately: on a tiny model that was most of what perch added in front of
// the server (docs/runtimes.md).
//
// Threading: one thread at a time per connection.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "core/status.h"

namespace perch {

struct ServerAnswer {
  int status = 0;
  std::string body;
};

class ServerConnection {
 public:
  using Clock = std::chrono::steady_clock;

  // Connects to 127.0.0.1:`port`, or to `unix_socket` when it is not empty.
  // Unavailable when nothing accepts within `connect_timeout`.
  static Result<std::unique_ptr<ServerConnection>> Open(int port, const std::string& unix_socket,
                                                        std::chrono::milliseconds connect_timeout);
  ~ServerConnection();
  ServerConnection(const ServerConnection&) = delete;
  ServerConnection& operator=(const ServerConnection&) = delete;

  // POSTs `body` (JSON) to `path` and reads the answer, giving up at
  // `deadline`. Unavailable when the connection broke or the answer is not
  // HTTP (the connection is then unusable); DeadlineExceeded past the
  // deadline; ResourceExhausted for an answer over `max_body_bytes`.
  Result<ServerAnswer> Post(std::string_view path, std::string_view body,
                            Clock::time_point deadline, size_t max_body_bytes);

  // False once the server closed it or an exchange failed.
  bool reusable() const { return fd_ >= 0; }

 private:
  explicit ServerConnection(int fd) : fd_(fd) {}
  void Close();
  // Bounds a blocking receive so that it returns by `deadline`; false when
  // the deadline passed.
  bool BoundReceiveWait(Clock::time_point deadline);

  int fd_ = -1;
  std::chrono::microseconds receive_bound_{0};  // the socket's SO_RCVTIMEO; 0: none set
};

}  // namespace perch
