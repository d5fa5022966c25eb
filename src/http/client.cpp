#include "http/client.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <exception>
#include <fstream>

#include "http/curl_library.h"

namespace perch::http {
namespace {

using SteadyClock = std::chrono::steady_clock;

constexpr long kMaxRedirects = 5;
// libcurl sends a body through its upload buffer, 64 KiB by default: one
// send() per buffer. A larger one sends a 600 KB image in two instead of ten.
constexpr uint64_t kLargeBodyBytes = 64 << 10;
constexpr long kLargeUploadBufferBytes = 512 << 10;
// Beyond libcurl's own cap (10 MiB since 7.88), which it applies itself.
constexpr size_t kMaxReceiveBufferBytes = 10 << 20;

bool SameName(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

std::string_view Trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) {
    text.remove_prefix(1);
  }
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t' || text.back() == '\r' ||
                           text.back() == '\n')) {
    text.remove_suffix(1);
  }
  return text;
}

// "scheme://host:port" of an absolute URL.
std::string OriginOf(const std::string& url) {
  const size_t scheme = url.find("://");
  if (scheme == std::string::npos) {
    return url;
  }
  return url.substr(0, url.find_first_of("/?#", scheme + 3));
}

// The URL without its query: signed storage URLs carry credentials there.
std::string WithoutQuery(const std::string& url) { return url.substr(0, url.find('?')); }

struct CurlCleanup {
  const CurlLibrary* api;
  void operator()(CURL* curl) const { api->easy_cleanup(curl); }
};
using CurlHandle = std::unique_ptr<CURL, CurlCleanup>;

struct ForgetOptions {
  const CurlLibrary& api;
  CURL* curl;
  ~ForgetOptions() { api.easy_reset(curl); }
};

// Frees what one Send allocates in libcurl, whatever way it returns.
struct HeaderList {
  explicit HeaderList(const CurlLibrary& library) : api(library) {}
  HeaderList(const HeaderList&) = delete;
  HeaderList& operator=(const HeaderList&) = delete;
  ~HeaderList() { api.slist_free_all(list); }

  const CurlLibrary& api;
  curl_slist* list = nullptr;
  bool Append(const std::string& line) {
    curl_slist* grown = api.slist_append(list, line.c_str());
    if (grown == nullptr) {
      return false;
    }
    list = grown;
    return true;
  }
};

bool Readable(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return static_cast<bool>(in);
}

// The state of one transfer, shared with libcurl's callbacks.
struct Transfer {
  const CurlLibrary* api = nullptr;
  CURL* curl = nullptr;
  const ClientRequest* request = nullptr;
  ClientResponse response;
  bool head_called = false;
  bool stopped_at_head = false;  // on_head said no: not an error
  bool cancelled = false;        // on_body said no
  bool too_large = false;        // more than max_body_bytes
  bool timed_out = false;        // no byte moved for read_timeout
  bool stopped = false;          // ClientOptions::stop was requested
  std::string callback_error;    // a callback threw, or the body source failed

  // Body source.
  const std::string* memory = nullptr;
  std::ifstream file;
  uint64_t body_length = 0;
  uint64_t body_sent = 0;

  std::stop_token stop;

  // Read timeout bookkeeping: from the moment the connection is up.
  std::chrono::milliseconds read_timeout{0};
  SteadyClock::time_point started;
  bool connected = false;
  SteadyClock::time_point last_progress;
  curl_off_t last_moved = 0;
  uint64_t last_reported = UINT64_MAX;
  bool reports_upload = false;
};

bool CallOnHead(Transfer& transfer) {
  if (transfer.head_called) {
    return true;
  }
  transfer.head_called = true;
  long status = 0;
  transfer.api->easy_getinfo(transfer.curl, CURLINFO_RESPONSE_CODE, &status);
  transfer.response.status = static_cast<int>(status);
  if (transfer.request->on_head &&
      !transfer.request->on_head(transfer.response.status, transfer.response.headers)) {
    transfer.stopped_at_head = true;
    return false;
  }
  return true;
}

// Each header line of each response (a redirect or a 100 Continue brings a
// new status line: what came before it belonged to another response).
size_t OnHeader(char* data, size_t size, size_t count, void* user) {
  auto& transfer = *static_cast<Transfer*>(user);
  const size_t length = size * count;
  try {
    const std::string_view line(data, length);
    if (line.starts_with("HTTP/")) {
      transfer.response.headers = Headers();
      return length;
    }
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) {
      return length;
    }
    transfer.response.headers.Add(Trim(line.substr(0, colon)),
                                  std::string(Trim(line.substr(colon + 1))));
    return length;
  } catch (const std::exception& error) {
    transfer.callback_error = error.what();
    return 0;
  }
}

size_t OnWrite(char* data, size_t size, size_t count, void* user) {
  auto& transfer = *static_cast<Transfer*>(user);
  const size_t length = size * count;
  try {
    if (!CallOnHead(transfer)) {
      return 0;
    }
    const std::string_view piece(data, length);
    if (transfer.request->on_body) {
      if (!transfer.request->on_body(piece)) {
        transfer.cancelled = true;
        return 0;
      }
      return length;
    }
    if (transfer.response.body.size() + length > transfer.request->max_body_bytes) {
      transfer.too_large = true;
      return 0;
    }
    transfer.response.body.append(piece);
    return length;
  } catch (const std::exception& error) {
    transfer.callback_error = error.what();
    return 0;
  }
}

size_t OnRead(char* buffer, size_t size, size_t count, void* user) {
  auto& transfer = *static_cast<Transfer*>(user);
  const uint64_t wanted =
      std::min<uint64_t>(size * count, transfer.body_length - transfer.body_sent);
  if (wanted == 0) {
    return 0;
  }
  if (transfer.memory != nullptr) {
    std::copy_n(transfer.memory->data() + transfer.body_sent, wanted, buffer);
  } else {
    transfer.file.read(buffer, static_cast<std::streamsize>(wanted));
    if (static_cast<uint64_t>(transfer.file.gcount()) != wanted) {
      try {
        transfer.callback_error =
            fmt::format("{} ended before the {} bytes to send",
                        transfer.request->file->path.string(), transfer.body_length);
      } catch (const std::exception&) {
        transfer.callback_error = "the file to send ended early";
      }
      return CURL_READFUNC_ABORT;
    }
  }
  transfer.body_sent += wanted;
  return static_cast<size_t>(wanted);
}

// libcurl rewinds the body when it must send it again (a kept-alive
// connection that the server had closed in the meantime).
int OnSeek(void* user, curl_off_t offset, int origin) {
  auto& transfer = *static_cast<Transfer*>(user);
  if (origin != SEEK_SET || offset < 0 || static_cast<uint64_t>(offset) > transfer.body_length) {
    return CURL_SEEKFUNC_CANTSEEK;
  }
  transfer.body_sent = static_cast<uint64_t>(offset);
  if (transfer.memory == nullptr) {
    transfer.file.clear();
    transfer.file.seekg(
        static_cast<std::streamoff>(transfer.request->file->offset + transfer.body_sent));
    if (!transfer.file) {
      return CURL_SEEKFUNC_FAIL;
    }
  }
  return CURL_SEEKFUNC_OK;
}

// Called at least once a second while a transfer runs, even when nothing
// moves: the read timeout ("no byte either way for N ms") and progress.
int OnProgress(void* user, curl_off_t download_total, curl_off_t downloaded,
               curl_off_t upload_total, curl_off_t uploaded) {
  auto& transfer = *static_cast<Transfer*>(user);
  if (transfer.stop.stop_requested()) {
    transfer.stopped = true;
    return 1;
  }
  const auto now = SteadyClock::now();
  if (!transfer.connected) {
    // Connecting has its own timeout; the read timeout counts from the
    // moment the request could go out.
    curl_off_t ready_us = 0;
    transfer.api->easy_getinfo(transfer.curl, CURLINFO_PRETRANSFER_TIME_T, &ready_us);
    if (ready_us == 0) {
      return 0;
    }
    transfer.connected = true;
    transfer.last_progress = transfer.started + std::chrono::microseconds(ready_us);
  }
  const curl_off_t moved = downloaded + uploaded;
  if (moved != transfer.last_moved) {
    transfer.last_moved = moved;
    transfer.last_progress = now;
  } else if (now - transfer.last_progress > transfer.read_timeout) {
    transfer.timed_out = true;
    return 1;
  }
  if (transfer.request->progress) {
    const bool upload = transfer.reports_upload;
    const auto done = static_cast<uint64_t>(upload ? uploaded : downloaded);
    const auto total = static_cast<uint64_t>(upload ? upload_total : download_total);
    if (done != transfer.last_reported) {
      transfer.last_reported = done;
      try {
        transfer.request->progress(done, total);
      } catch (const std::exception& error) {
        transfer.callback_error = error.what();
        return 1;
      }
    }
  }
  return 0;
}

bool HasBody(const ClientRequest& request) {
  return request.file.has_value() || !request.body.empty() || request.method == "POST" ||
         request.method == "PUT" || request.method == "PATCH";
}

std::string Milliseconds(std::chrono::milliseconds value) {
  if (value.count() % 1000 == 0) {
    return fmt::format("{} s", value.count() / 1000);
  }
  return fmt::format("{} ms", value.count());
}

}  // namespace

class Client::Impl {
 public:
  Impl(const CurlLibrary& api, ClientOptions options, CurlHandle curl)
      : api_(api), options_(std::move(options)), handle_(std::move(curl)), curl_(handle_.get()) {}

  Result<ClientResponse> Send(const ClientRequest& request) {
    if (!request.url.starts_with("http://") && !request.url.starts_with("https://")) {
      return InvalidArgument(
          fmt::format("'{}' is not an http:// or https:// URL", request.url.substr(0, 200)));
    }
    if (options_.stop.stop_requested()) {
      return Stopped(request);
    }
    bool resend = false;
    auto sent = Attempt(request, /*fresh_connection=*/false, resend);
    if (resend) {
      // A kept-alive connection that died since the last call (the server
      // closed it, or the link was cut and reset): libcurl sends again by
      // itself when such a connection fails at the first read, but not
      // when it fails while sending. Nothing came back, so the server
      // answered nothing: send once more, on a new connection.
      return Attempt(request, /*fresh_connection=*/true, resend);
    }
    return sent;
  }

 private:
  Result<ClientResponse> Attempt(const ClientRequest& request, bool fresh_connection,
                                 bool& resend) {
    // Declared first, so it runs last: the handle forgets this request's
    // options (which point at the locals below) but keeps its connections,
    // so the next call to the same server reuses one.
    const ForgetOptions forget{api_, curl_};
    Transfer transfer;
    transfer.api = &api_;
    transfer.curl = curl_;
    transfer.request = &request;
    transfer.stop = options_.stop;
    transfer.read_timeout = options_.read_timeout;
    char error_text[CURL_ERROR_SIZE] = {};
    HeaderList headers(api_);
    PERCH_RETURN_IF_ERROR(Configure(request, transfer, headers, error_text));
    api_.easy_setopt(curl_, CURLOPT_FRESH_CONNECT, fresh_connection ? 1L : 0L);

    transfer.started = SteadyClock::now();
    const CURLcode code = api_.easy_perform(curl_);
    if (code == CURLE_OK || transfer.stopped_at_head) {
      (void)CallOnHead(transfer);  // a body-less answer: the head is all there is
      char* effective = nullptr;
      api_.easy_getinfo(curl_, CURLINFO_EFFECTIVE_URL, &effective);
      transfer.response.url = effective != nullptr ? effective : request.url;
      return std::move(transfer.response);
    }
    long new_connections = 0;
    api_.easy_getinfo(curl_, CURLINFO_NUM_CONNECTS, &new_connections);
    resend = !fresh_connection && code == CURLE_SEND_ERROR && new_connections == 0 &&
             !transfer.head_called && transfer.callback_error.empty() && NothingReceived();
    return Failure(request, transfer, code, error_text);
  }

  bool NothingReceived() const {
    curl_off_t received = 0;
    api_.easy_getinfo(curl_, CURLINFO_SIZE_DOWNLOAD_T, &received);
    long head_bytes = 0;
    api_.easy_getinfo(curl_, CURLINFO_HEADER_SIZE, &head_bytes);
    return received == 0 && head_bytes == 0;
  }

 private:
  Status Configure(const ClientRequest& request, Transfer& transfer, HeaderList& headers,
                   char* error_text) {
    CURL* curl = curl_;
    api_.easy_setopt(curl, CURLOPT_ERRORBUFFER, error_text);
    api_.easy_setopt(curl, CURLOPT_URL, request.url.c_str());
    api_.easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    api_.easy_setopt(curl, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_1_1));
    api_.easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    api_.easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    api_.easy_setopt(curl, CURLOPT_USERAGENT, options_.user_agent.c_str());
    api_.easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS,
                     static_cast<long>(options_.connect_timeout.count()));
    if (!options_.unix_socket.empty()) {
      api_.easy_setopt(curl, CURLOPT_UNIX_SOCKET_PATH, options_.unix_socket.c_str());
    }
    api_.easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L);
    if (!options_.ca_file.empty()) {
      api_.easy_setopt(curl, CURLOPT_CAINFO, options_.ca_file.c_str());
    }
    if (!options_.cert_file.empty()) {
      api_.easy_setopt(curl, CURLOPT_SSLCERT, options_.cert_file.c_str());
      api_.easy_setopt(
          curl, CURLOPT_SSLKEY,
          (options_.key_file.empty() ? options_.cert_file : options_.key_file).c_str());
    }

    api_.easy_setopt(curl, CURLOPT_HEADERFUNCTION, OnHeader);
    api_.easy_setopt(curl, CURLOPT_HEADERDATA, &transfer);
    api_.easy_setopt(curl, CURLOPT_WRITEFUNCTION, OnWrite);
    api_.easy_setopt(curl, CURLOPT_WRITEDATA, &transfer);
    if (request.receive_buffer_bytes > 0) {
      api_.easy_setopt(
          curl, CURLOPT_BUFFERSIZE,
          static_cast<long>(std::min(request.receive_buffer_bytes, kMaxReceiveBufferBytes)));
    }
    api_.easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    api_.easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, OnProgress);
    api_.easy_setopt(curl, CURLOPT_XFERINFODATA, &transfer);

    const bool head = request.method == "HEAD";
    const bool has_body = !head && HasBody(request);
    bool content_type = false;
    for (const auto& [name, value] : request.headers.fields()) {
      if (name.find_first_of(":\r\n") != std::string::npos ||
          value.find_first_of("\r\n") != std::string::npos) {
        return InvalidArgument(
            fmt::format("the request header '{}' holds a line break or ':'", name.substr(0, 100)));
      }
      if (SameName(name, "Content-Length")) {
        continue;  // libcurl sends the body's own length
      }
      content_type = content_type || SameName(name, "Content-Type");
      if (!headers.Append(fmt::format("{}: {}", name, value))) {
        return ResourceExhausted("out of memory building the request headers");
      }
    }
    if (has_body) {
      // No "Expect: 100-continue" round trip, and no form content type the
      // caller did not ask for.
      if (!headers.Append("Expect:") || (!content_type && !headers.Append("Content-Type:"))) {
        return ResourceExhausted("out of memory building the request headers");
      }
    }
    api_.easy_setopt(curl, CURLOPT_HTTPHEADER, headers.list);

    if (head) {
      api_.easy_setopt(curl, CURLOPT_NOBODY, 1L);
    } else if (has_body) {
      PERCH_RETURN_IF_ERROR(OpenBody(request, transfer));
      // POST with a read function and a known size: a Content-Length body,
      // never chunked; any other method name replaces POST on the wire.
      api_.easy_setopt(curl, CURLOPT_POST, 1L);
      api_.easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE,
                       static_cast<curl_off_t>(transfer.body_length));
      api_.easy_setopt(curl, CURLOPT_READFUNCTION, OnRead);
      api_.easy_setopt(curl, CURLOPT_READDATA, &transfer);
      api_.easy_setopt(curl, CURLOPT_SEEKFUNCTION, OnSeek);
      api_.easy_setopt(curl, CURLOPT_SEEKDATA, &transfer);
      if (transfer.body_length > kLargeBodyBytes) {
        api_.easy_setopt(curl, CURLOPT_UPLOAD_BUFFERSIZE, kLargeUploadBufferBytes);
      }
      transfer.reports_upload = transfer.body_length > 0;
      if (request.method != "POST") {
        api_.easy_setopt(curl, CURLOPT_CUSTOMREQUEST, request.method.c_str());
      }
    } else {
      api_.easy_setopt(curl, CURLOPT_HTTPGET, 1L);
      if (request.method != "GET") {
        api_.easy_setopt(curl, CURLOPT_CUSTOMREQUEST, request.method.c_str());
      }
    }
    if (request.follow_redirects && (request.method == "GET" || head)) {
      api_.easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 1L);
      api_.easy_setopt(curl, CURLOPT_MAXREDIRS, kMaxRedirects);
    }
    return Status::Ok();
  }

  static Status OpenBody(const ClientRequest& request, Transfer& transfer) {
    if (!request.file) {
      transfer.memory = &request.body;
      transfer.body_length = request.body.size();
      return Status::Ok();
    }
    const FileSlice& slice = *request.file;
    std::error_code error;
    const uint64_t size = std::filesystem::file_size(slice.path, error);
    if (error) {
      return NotFound(
          fmt::format("cannot read {} to send it: {}", slice.path.string(), error.message()));
    }
    if (slice.offset > size || slice.length > size - slice.offset) {
      return InvalidArgument(fmt::format("{} holds {} bytes, fewer than the {} at {} to send",
                                         slice.path.string(), size, slice.length, slice.offset));
    }
    transfer.file.open(slice.path, std::ios::binary);
    transfer.file.seekg(static_cast<std::streamoff>(slice.offset));
    if (!transfer.file) {
      return NotFound(fmt::format("cannot open {} to send it", slice.path.string()));
    }
    transfer.body_length = slice.length;
    return Status::Ok();
  }

  static Status Stopped(const ClientRequest& request) {
    return Status(StatusCode::kCancelled, fmt::format("{} {}: stopped (perch is shutting down)",
                                                      request.method, WithoutQuery(request.url)));
  }

  Status Failure(const ClientRequest& request, const Transfer& transfer, CURLcode code,
                 const char* error_text) const {
    const std::string url = WithoutQuery(request.url);
    const std::string what = request.method + " " + url;
    if (transfer.stopped) {
      return Stopped(request);
    }
    if (transfer.cancelled) {
      return Status(StatusCode::kCancelled, what + ": the transfer was stopped");
    }
    if (transfer.too_large) {
      return ResourceExhausted(fmt::format("{}: the answer is larger than the {} bytes allowed",
                                           what, request.max_body_bytes));
    }
    if (!transfer.callback_error.empty()) {
      return Unavailable(fmt::format("{}: {}", what, transfer.callback_error));
    }
    if (transfer.timed_out) {
      return Unavailable(fmt::format("{}: the server sent nothing for {} (read timeout)", what,
                                     Milliseconds(options_.read_timeout)));
    }
    const std::string origin = OriginOf(request.url);
    const std::string detail = error_text[0] != '\0' ? error_text : api_.easy_strerror(code);
    long os_error = 0;
    api_.easy_getinfo(curl_, CURLINFO_OS_ERRNO, &os_error);
    const bool tls = request.url.starts_with("https://");
    const bool nothing_received = NothingReceived();
    if (!tls && nothing_received &&
        (code == CURLE_GOT_NOTHING || code == CURLE_RECV_ERROR ||
         code == CURLE_UNSUPPORTED_PROTOCOL || code == CURLE_WEIRD_SERVER_REPLY)) {
      // What a TLS port does to plain HTTP: an alert, a reset, or silence.
      return Unavailable(fmt::format(
          "{}: the server sent no HTTP answer; if it serves TLS, use https:// ({})", what, detail));
    }
    if (tls && nothing_received &&
        (code == CURLE_SEND_ERROR || code == CURLE_RECV_ERROR || code == CURLE_GOT_NOTHING)) {
      // After a TLS 1.3 handshake, a server that wants a client certificate
      // it did not get closes the connection at the first read or write.
      const bool asked = detail.find("certificate required") != std::string::npos;
      return Unavailable(fmt::format(
          "{}: the server closed the TLS connection without answering{} ({})", what,
          asked ? ": it requires a client certificate (mutual TLS) that it accepts"
                : "; if it requires a client certificate (mutual TLS), it accepts none this "
                  "client has",
          detail));
    }
    switch (code) {
      case CURLE_COULDNT_RESOLVE_HOST:
        return Unavailable(fmt::format(
            "{} is unreachable: its host name does not resolve (DNS: {})", origin, detail));
      case CURLE_COULDNT_CONNECT:
        if (os_error == ECONNREFUSED) {
          return Unavailable(fmt::format(
              "{} is unreachable: connection refused (is the server running on that port?)",
              origin));
        }
        return Unavailable(fmt::format("{} is unreachable: {}", origin, detail));
      case CURLE_OPERATION_TIMEDOUT:
        return Unavailable(fmt::format("{} is unreachable: no connection within {} ({})", origin,
                                       Milliseconds(options_.connect_timeout), detail));
      case CURLE_PEER_FAILED_VERIFICATION:
        if (detail.find("subject name") != std::string::npos ||
            detail.find("match") != std::string::npos) {
          return Unavailable(fmt::format(
              "{}: TLS: the server's certificate does not name this host ({})", origin, detail));
        }
        return Unavailable(fmt::format(
            "{}: TLS: the server's certificate is not signed by a trusted CA; pass the CA that "
            "signed it with --ca-file ({})",
            origin, detail));
      case CURLE_SSL_CACERT_BADFILE:
        return InvalidArgument(
            fmt::format("{}: cannot use the CA file {} ({})", origin, options_.ca_file, detail));
      case CURLE_SSL_CERTPROBLEM:
        return InvalidArgument(fmt::format("{}: cannot use the client certificate {} ({})", origin,
                                           options_.cert_file, detail));
      case CURLE_SSL_CONNECT_ERROR:
        if (detail.find("wrong version number") != std::string::npos ||
            detail.find("packet length too long") != std::string::npos) {
          return Unavailable(fmt::format(
              "{}: TLS handshake failed: the server answers plain HTTP (use http://) ({})", origin,
              detail));
        }
        return Unavailable(fmt::format("{}: TLS handshake failed ({})", origin, detail));
      case CURLE_GOT_NOTHING:
      case CURLE_UNSUPPORTED_PROTOCOL:
      case CURLE_WEIRD_SERVER_REPLY:
        return Unavailable(fmt::format("{}: the server sent no HTTP answer ({})", what, detail));
      case CURLE_SEND_ERROR:
        return Unavailable(
            fmt::format("{}: the connection broke while sending ({})", what, detail));
      case CURLE_RECV_ERROR:
        return Unavailable(
            fmt::format("{}: the connection broke while reading the answer ({})", what, detail));
      case CURLE_PARTIAL_FILE:
        return Unavailable(
            fmt::format("{}: the answer ended before its announced length ({})", what, detail));
      case CURLE_TOO_MANY_REDIRECTS:
        return Unavailable(fmt::format("{}: more than {} redirects", what, kMaxRedirects));
      case CURLE_URL_MALFORMAT:
        return InvalidArgument(fmt::format("'{}' is not a valid URL ({})", url, detail));
      case CURLE_OUT_OF_MEMORY:
        return ResourceExhausted(fmt::format("{}: out of memory", what));
      default:
        return Unavailable(fmt::format("{} failed: {}", what, detail));
    }
  }

  const CurlLibrary& api_;  // LoadCurl's, alive until the process exits
  const ClientOptions options_;
  const CurlHandle handle_;
  CURL* const curl_;  // handle_'s, for brevity
};

Result<std::unique_ptr<Client>> Client::Create(ClientOptions options) try {
  for (const auto& [flag, path] :
       {std::pair<const char*, const std::string&>{"CA", options.ca_file},
        {"client certificate", options.cert_file},
        {"client key", options.key_file}}) {
    if (!path.empty() && !Readable(path)) {
      return InvalidArgument(fmt::format("cannot read the {} file {}", flag, path));
    }
  }
  if (options.connect_timeout.count() <= 0 || options.read_timeout.count() <= 0) {
    return InvalidArgument("the HTTP client's timeouts must be positive");
  }
  PERCH_ASSIGN_OR_RETURN(const CurlLibrary* api, LoadCurl());
  CurlHandle curl(api->easy_init(), CurlCleanup{api});
  if (curl == nullptr) {
    return ResourceExhausted("libcurl could not create a handle (out of memory?)");
  }
  return std::unique_ptr<Client>(
      new Client(std::make_unique<Impl>(*api, std::move(options), std::move(curl))));
} catch (const std::exception& error) {
  return Internal(fmt::format("cannot create an HTTP client: {}", error.what()));
}

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::~Client() = default;

Result<ClientResponse> Client::Send(const ClientRequest& request) {
  try {
    return impl_->Send(request);
  } catch (const std::exception& error) {
    return Internal(
        fmt::format("{} {}: {}", request.method, WithoutQuery(request.url), error.what()));
  }
}

}  // namespace perch::http
