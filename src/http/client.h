// The HTTP client every perch component calls other servers with (OCI
// registries, the hub, the peers of a location): libcurl inside client.cpp
// only. Keeps connections alive between calls, verifies TLS against the
// system's CAs or `ca_file`, presents a client certificate for mutual TLS,
// and gives up on a server that goes silent.
//
// Errors: a transport failure is Unavailable with a message that names the
// URL and what went wrong ("http://10.0.0.5:8080 is unreachable: connection
// refused", "... TLS: the server's certificate is not signed by a trusted
// CA (--ca-file)"); an HTTP answer of any status is a ClientResponse, for
// the caller to interpret (errors.h's StatusCodeForHttp helps).
//
// Threading: one Client is used by one thread at a time; use one per thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/status.h"
#include "http/message.h"

namespace perch::http {

struct ClientOptions {
  std::string ca_file;    // PEM CAs to trust instead of the system's; empty: the system's
  std::string cert_file;  // client certificate (mutual TLS); empty: none
  std::string key_file;   // its key
  std::chrono::milliseconds connect_timeout{10'000};
  // No byte moved for this long (either way): the call fails.
  std::chrono::milliseconds read_timeout{60'000};
  std::string user_agent = "perch";
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
  std::string body;               // sent when `file` is unset and the method has a body
  std::optional<FileSlice> file;  // sent instead of `body`
  // Called once the status and headers are in; return false to stop before the body.
  std::function<bool(int status, const Headers& headers)> on_head;
  // Set: the body goes here piece by piece instead of into ClientResponse::body;
  // return false to abort the transfer (the call then fails with Cancelled).
  std::function<bool(std::string_view piece)> on_body;
  size_t max_body_bytes = 64 << 20;  // into ClientResponse::body; more: ResourceExhausted
  bool follow_redirects = false;     // GET/HEAD only, at most 5
  // Reports bytes moved so far and the total when known (0 when not).
  std::function<void(uint64_t done, uint64_t total)> progress;
};

struct ClientResponse {
  int status = 0;
  Headers headers;
  std::string body;
  std::string url;  // the final URL, after redirects
};

class Client {
 public:
  // InvalidArgument when a TLS file is given but unreadable.
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
