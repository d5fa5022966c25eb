// The HTTP client every perch component calls other servers with (OCI
// registries, the hub, the peers of a location): libcurl inside client.cpp
// only. Keeps connections alive between calls, verifies TLS against the
// system's CAs or `ca_file`, presents a client certificate for mutual TLS,
// and gives up on a server that goes silent.
//
// Errors: a transport failure is Unavailable with a message that names the
// URL (never its query) and what went wrong. Failures before a connection
// is up, and TLS failures, start with the origin: "http://10.0.0.5:8080 is
// unreachable: connection refused ...", "https://10.0.0.5:5000: TLS: the
// server's certificate is not signed by a trusted CA; pass the CA that
// signed it with --ca-file ..."; later ones with the method and URL ("GET
// http://...: the server sent nothing for 60 s (read timeout)"). Callers
// may replace the origin prefix with their own name for the server. An
// HTTP answer of any status is a ClientResponse, for the caller to
// interpret (errors.h's StatusCodeForHttp helps).
//
// Threading: one Client is used by one thread at a time; use one per thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>

#include "core/status.h"
#include "http/message.h"

namespace perch::http {

struct ClientOptions {
  std::string ca_file{};    // PEM CAs to trust instead of the system's; empty: the system's
  std::string cert_file{};  // client certificate (mutual TLS); empty: none
  std::string key_file{};   // its key
  std::chrono::milliseconds connect_timeout{10'000};  // TCP and TLS handshake
  // No byte moved for this long (either way) once connected: the call fails.
  // Checked about once a second, so it fires up to a second late.
  std::chrono::milliseconds read_timeout{60'000};
  std::string user_agent = "perch";
  // Set: every request goes over this Unix socket; the URL then only names
  // the host for the Host header and the path.
  std::string unix_socket{};
  // Once stop is requested, a call in progress (connecting, sending or
  // waiting for an answer) ends within about a second with Cancelled, and
  // later calls fail at once the same way: a component that stops must not
  // wait out a connect or read timeout on a dead link.
  std::stop_token stop{};
};

// Where a request's body comes from: nothing, memory, or a slice of a file.
struct FileSlice {
  std::filesystem::path path;
  uint64_t offset = 0;
  uint64_t length = 0;
};

struct ClientRequest {
  std::string method = "GET";
  std::string url;  // absolute: http(s)://host[:port]/path?query
  Headers headers;
  // Sent when `file` is unset; POST, PUT and PATCH always send a body (a
  // Content-Length: 0 one when empty), never chunked. Content-Length is set
  // by the client; header values must not hold line breaks (InvalidArgument).
  std::string body;
  std::optional<FileSlice> file;  // sent instead of `body`
  // Called once the status and headers of the final answer are in; return
  // false to stop before the body: Send then returns the status and headers
  // without it (and the connection is closed).
  std::function<bool(int status, const Headers& headers)> on_head;
  // Set: the body goes here piece by piece instead of into ClientResponse::body;
  // return false to abort the transfer (the call then fails with Cancelled).
  std::function<bool(std::string_view piece)> on_body;
  size_t max_body_bytes = 64 << 20;  // into ClientResponse::body; more: ResourceExhausted
  // Bytes one read from the connection may take (libcurl's receive buffer,
  // capped by libcurl); 0 keeps libcurl's 16 KiB. A large download asks
  // for more: each read costs a poll, a recv and an on_body call (16,000 of
  // each for a 256 MiB blob at 16 KiB).
  size_t receive_buffer_bytes = 0;
  bool follow_redirects = false;  // GET/HEAD only, at most 5
  // Reports bytes moved so far and the total when known (0 when not).
  std::function<void(uint64_t done, uint64_t total)> progress;
};

struct ClientResponse {
  int status = 0;
  Headers headers;
  std::string body;
  std::string url;  // the final URL, after redirects
};

// Keeps its connections alive: calls to a server reuse one connection
// (TLS session included) while the server keeps it open.
class Client {
 public:
  // InvalidArgument when a TLS file is given but unreadable, or a timeout
  // is not positive.
  static Result<std::unique_ptr<Client>> Create(ClientOptions options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  Result<ClientResponse> Send(const ClientRequest& request);

 private:
  class Impl;
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace perch::http
