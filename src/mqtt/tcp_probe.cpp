#include "mqtt/tcp_probe.h"

#include <fmt/format.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

namespace perch::mqtt {
namespace {

constexpr int kPollSliceMs = 100;

struct AddressesDeleter {
  void operator()(addrinfo* list) const { freeaddrinfo(list); }
};

class Socket {
 public:
  explicit Socket(int fd) : fd_(fd) {}
  ~Socket() {
    if (fd_ >= 0) {
      close(fd_);
    }
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  int get() const { return fd_; }

 private:
  const int fd_;
};

}  // namespace

Status ProbeTcp(const std::string& host, int port, std::chrono::milliseconds timeout,
                const std::function<bool()>& stopping) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (const int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found);
      rc != 0) {
    return Unavailable(fmt::format("cannot resolve {}: {}", host, gai_strerror(rc)));
  }
  const std::unique_ptr<addrinfo, AddressesDeleter> addresses(found);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string problem = "no address";
  for (const addrinfo* address = addresses.get(); address != nullptr; address = address->ai_next) {
    const Socket socket(::socket(address->ai_family,
                                 address->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                                 address->ai_protocol));
    if (socket.get() < 0) {
      problem = std::strerror(errno);
      continue;
    }
    if (connect(socket.get(), address->ai_addr, address->ai_addrlen) == 0) {
      return Status::Ok();
    }
    if (errno != EINPROGRESS) {
      problem = std::strerror(errno);
      continue;
    }
    while (true) {
      if (stopping()) {
        return Status(StatusCode::kCancelled, "stopping");
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        return Unavailable(fmt::format("no answer within {} s (the address drops connections)",
                                       std::chrono::duration<double>(timeout).count()));
      }
      pollfd wait{.fd = socket.get(), .events = POLLOUT, .revents = 0};
      const int ready =
          poll(&wait, 1, static_cast<int>(std::min<int64_t>(left.count(), kPollSliceMs)));
      if (ready < 0 && errno != EINTR) {
        problem = std::strerror(errno);
        break;
      }
      if (ready > 0) {
        int error = 0;
        socklen_t length = sizeof(error);
        getsockopt(socket.get(), SOL_SOCKET, SO_ERROR, &error, &length);
        if (error == 0) {
          return Status::Ok();
        }
        problem = std::strerror(error);
        break;
      }
    }
  }
  return Unavailable(problem);
}

}  // namespace perch::mqtt
