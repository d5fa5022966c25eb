// The HTTP/1.1 server every perch listener runs on (the agent's REST API,
// the hub's registry and fleet API, the peers of a location): event-driven
// I/O (Boost.Beast on Asio, inside server.cpp only), so that no number of
// slow, stalled or idle clients keeps it from answering the others.
//
// What it guarantees to every route:
// - the request head must arrive within `header_timeout` and fit in
//   `max_header_bytes` (431 otherwise); each body read must make progress
//   within `body_timeout`; a client that stalls is disconnected;
// - a declared Content-Length over the route's limit is refused with 413
//   before any body byte is read; buffered bodies are counted again after
//   decompression (gzip, deflate, br) and chunked bodies as they arrive;
// - past `max_connections` open connections, new ones get 503 and are closed;
// - handlers run on `handler_threads`, so a handler that waits (inference
//   waits for its answer) holds no connection but its own; only a route's
//   `run_inline` may have one run on the I/O thread, for a request it
//   vouches needs no waiting and little CPU;
// - a decoded path over 4 KiB answers 414 without being routed;
// - an exception thrown by a handler answers 500 with the JSON error body;
//   unknown paths answer 404, known paths with another method 405 (with
//   Allow), both in the JSON error body;
// - TLS when `tls.cert_file` is set (plain HTTP on that port is refused),
//   and mutual TLS when `tls.client_ca_file` is set as well.
//
// Lifecycle: Create (TLS material is loaded and checked here), Route for
// every route, Start, Stop. Stop stops accepting, waits up to
// `drain_timeout` for handlers in flight, then closes every connection.
// Threading: Route before Start only; Start and Stop from one controlling
// thread; handlers concurrently on the handler threads. Each I/O thread
// runs an event loop of its own and each connection stays on one of them
// (round robin), so a request costs two thread hand-offs: I/O thread to a
// handler thread and back, none when its route's `run_inline` says so.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "core/log.h"
#include "core/status.h"
#include "http/message.h"

namespace perch::http {

struct TlsOptions {
  std::string cert_file;       // PEM certificate chain; empty: plain HTTP
  std::string key_file;        // PEM private key of the certificate
  std::string client_ca_file;  // set: clients must present a certificate this CA signed

  bool enabled() const { return !cert_file.empty(); }
};

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 0;              // 0: any free port, see Server::port()
  int io_threads = 2;        // socket I/O, parsing, TLS
  int handler_threads = 16;  // run handlers; a handler may block
  size_t max_connections = 10000;
  size_t max_header_bytes = 16 << 10;
  size_t max_body_bytes = 64 << 20;                  // routes that set no limit of their own
  std::chrono::milliseconds header_timeout{10'000};  // the whole request head
  std::chrono::milliseconds body_timeout{30'000};    // between two body reads
  std::chrono::milliseconds idle_timeout{60'000};    // a keep-alive connection between requests
  std::chrono::milliseconds write_timeout{60'000};   // between two writes of the answer
  std::chrono::milliseconds drain_timeout{5'000};    // Stop: handlers in flight
  int listen_backlog = 4096;
  TlsOptions tls;
  std::string server_header = "perch";
};

enum class BodyMode {
  kBuffered,  // Request::body holds the whole (decompressed) body
  kStreamed,  // Request::stream hands it over piece by piece, raw
};

// Fills an error answer in the shape an API's clients expect (the OCI
// registry's `{"errors": [...]}`, say): `http_status` with `error`'s message.
using ErrorFormatter =
    std::function<void(Response& response, int http_status, const Status& error)>;

struct RouteOptions {
  BodyMode body = BodyMode::kBuffered;
  size_t max_body_bytes = 0;  // 0: ServerOptions::max_body_bytes
  // Answers the server makes itself once this route matched (413 for a
  // body over the limit, 415, a broken body) go through here; unset: the
  // JSON error body of errors.h.
  ErrorFormatter error_answer{};
  // Set (buffered routes only): asked on the I/O thread once a request's
  // body is in; true runs the handler right there, sparing the hand-off to
  // a handler thread and back (two thread wake-ups, more than a tiny
  // inference costs). Only for requests the handler answers without
  // waiting and within tens of microseconds: meanwhile the I/O thread
  // serves none of its other connections.
  std::function<bool(const Request& request)> run_inline{};
};

using Handler = std::function<void(Request& request, Response& response)>;

class Server {
 public:
  // InvalidArgument for options that cannot work, naming the option;
  // NotFound / InvalidArgument for TLS files that are missing or do not
  // hold a certificate and its key.
  static Result<std::unique_ptr<Server>> Create(ServerOptions options, Logger logger);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Adds a route: `method` ("GET" also answers HEAD) and `pattern`, an
  // ECMAScript regular expression that must match the whole decoded path
  // (its groups go to Request::matches). Routes are tried in the order they
  // were added; the first that matches path and method serves the request.
  void Route(std::string_view method, std::string pattern, Handler handler,
             RouteOptions options = {});

  // Binds and starts serving. Unavailable if the address cannot be bound.
  Status Start();
  // Stops accepting, drains, closes. Idempotent.
  void Stop();
  // The bound port (useful after asking for port 0).
  int port() const;
  // "http" or "https".
  std::string_view scheme() const;

 private:
  class Impl;
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace perch::http
