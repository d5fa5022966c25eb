#include "http/server.h"

#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <sys/resource.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <charconv>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <limits>
#include <mutex>
#include <optional>
#include <regex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "http/decompress.h"
#include "http/errors.h"
#include "http/handler_pool.h"
#include "http/wire.h"

namespace perch::http {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;

constexpr size_t kPieceBytes = 64 << 10;        // one body read at most, one streamed write
constexpr size_t kFirstPieceBytes = 4 << 10;    // a connection's first body read
constexpr size_t kWriteSliceBytes = 256 << 10;  // one write of a buffered answer
// After an answer that closes the connection with request bytes unread, how
// long the rest is read and dropped: closing at once would reset the
// connection and could destroy the answer before the client reads it.
constexpr std::chrono::seconds kLingerTime{2};
constexpr size_t kLingerBytes = 1 << 20;

struct CompiledRoute {
  std::string method;
  std::regex pattern;
  Handler handler;
  RouteOptions options;
};

class ConnectionBase {
 public:
  virtual ~ConnectionBase() = default;
  // Closes the socket from its strand; pending operations end.
  virtual void PostClose() = 0;
};

// What every connection shares: options, routes, handler threads, and the
// counts Stop waits on. Owned by Server::Impl, outlives every connection.
struct ServerCore {
  ServerCore(ServerOptions server_options, Logger server_logger)
      : options(std::move(server_options)), logger(std::move(server_logger)) {}

  void Register(uint64_t id, std::weak_ptr<ConnectionBase> connection) {
    const std::lock_guard lock(mutex);
    open.emplace(id, std::move(connection));
  }
  void Unregister(uint64_t id) {
    {
      const std::lock_guard lock(mutex);
      open.erase(id);
    }
    changed.notify_all();
  }
  void BeginRequest() {
    const std::lock_guard lock(mutex);
    ++in_flight;
  }
  void EndRequest() {
    {
      const std::lock_guard lock(mutex);
      --in_flight;
    }
    changed.notify_all();
  }

  const ServerOptions options;
  const Logger logger;
  std::vector<CompiledRoute> routes;  // written before Start only
  std::unique_ptr<HandlerPool> pool;  // set by Start
  std::atomic<bool> stopping{false};
  std::atomic<size_t> connections{0};  // counted against max_connections
  std::atomic<uint64_t> next_id{0};

  std::mutex mutex;
  std::condition_variable changed;
  std::unordered_map<uint64_t, std::weak_ptr<ConnectionBase>> open;  // guarded by mutex
  size_t in_flight = 0;                                              // guarded by mutex
};

struct RouteLookup {
  const CompiledRoute* route = nullptr;
  std::vector<std::string> matches;
  std::string allowed;  // the methods of routes whose pattern matched, when none took the method
};

RouteLookup FindRoute(const std::vector<CompiledRoute>& routes, std::string_view method,
                      const std::string& path) {
  RouteLookup lookup;
  std::vector<std::string> allowed;
  for (const CompiledRoute& route : routes) {
    std::smatch match;
    if (!std::regex_match(path, match, route.pattern)) {
      continue;
    }
    if (route.method == method || (method == "HEAD" && route.method == "GET")) {
      lookup.route = &route;
      for (const auto& group : match) {
        lookup.matches.push_back(group.str());
      }
      return lookup;
    }
    for (const std::string& name : route.method == "GET" ? std::vector<std::string>{"GET", "HEAD"}
                                                         : std::vector<std::string>{route.method}) {
      if (std::find(allowed.begin(), allowed.end(), name) == allowed.end()) {
        allowed.push_back(name);
      }
    }
  }
  lookup.allowed = fmt::format("{}", fmt::join(allowed, ", "));
  return lookup;
}

std::string ToStd(beast::string_view text) { return std::string(text.data(), text.size()); }

// A body the parser refused (a bad chunk), as opposed to one that stopped arriving.
bool IsMalformed(const error_code& ec) {
  return ec.category() == bhttp::make_error_code(bhttp::error::bad_chunk).category() &&
         ec != bhttp::error::end_of_stream && ec != bhttp::error::partial_message &&
         ec != bhttp::error::body_limit && ec != bhttp::error::need_buffer;
}

std::string_view ReasonFor(int status) {
  const beast::string_view text =
      bhttp::obsolete_reason(bhttp::int_to_status(static_cast<unsigned>(status)));
  const std::string_view reason(text.data(), text.size());
  return reason.empty() || reason.front() == '<' ? std::string_view("Unknown") : reason;
}

bool IgnoreCaseEqual(std::string_view a, std::string_view b) {
  return beast::iequals(beast::string_view(a.data(), a.size()),
                        beast::string_view(b.data(), b.size()));
}

// Hands a streamed request body from the connection's I/O strand to the
// handler thread, one piece per Next(): the handler thread asks, the strand
// reads, the handler thread waits for the piece.
class BodyBridge final : public BodyStream {
 public:
  BodyBridge(std::function<void()> read_piece, std::optional<uint64_t> declared)
      : read_piece_(std::move(read_piece)), declared_(declared) {}

  Result<std::string_view> Next() override {
    std::unique_lock lock(mutex_);
    if (!failure_.ok()) {
      return failure_;
    }
    if (done_) {
      return std::string_view();
    }
    waiting_ = true;
    lock.unlock();
    read_piece_();
    lock.lock();
    ready_.wait(lock, [this] { return !waiting_; });
    if (!failure_.ok()) {
      return failure_;
    }
    return std::string_view(piece_, piece_size_);
  }

  std::optional<uint64_t> declared_length() const override { return declared_; }

  // From the strand: the piece read (valid until the next read), or the end.
  void Deliver(const char* data, size_t size, bool done) {
    {
      const std::lock_guard lock(mutex_);
      piece_ = data;
      piece_size_ = size;
      done_ = done;
      waiting_ = false;
    }
    ready_.notify_all();
  }
  void Fail(Status status) {
    {
      const std::lock_guard lock(mutex_);
      if (failure_.ok()) {
        failure_ = std::move(status);
      }
      waiting_ = false;
    }
    ready_.notify_all();
  }
  bool complete() const {
    const std::lock_guard lock(mutex_);
    return done_ && failure_.ok();
  }
  bool too_large() const {
    const std::lock_guard lock(mutex_);
    return failure_.code() == StatusCode::kResourceExhausted;
  }

 private:
  const std::function<void()> read_piece_;
  const std::optional<uint64_t> declared_;
  mutable std::mutex mutex_;
  std::condition_variable ready_;
  const char* piece_ = nullptr;  // guarded by mutex_
  size_t piece_size_ = 0;        // guarded by mutex_
  bool done_ = false;            // guarded by mutex_
  bool waiting_ = false;         // guarded by mutex_
  Status failure_;               // guarded by mutex_
};

// One client connection: reads a request head, routes it, reads or streams
// its body, runs the handler on a handler thread, writes the answer, and
// waits for the next request. Every step but the handler runs on the
// connection's strand; the handler thread touches request_ and response_
// only while the strand leaves them alone (between Dispatch and Write).
template <typename Stream>
class Connection final : public ConnectionBase,
                         public std::enable_shared_from_this<Connection<Stream>> {
 public:
  static constexpr bool kTls = !std::is_same_v<Stream, beast::tcp_stream>;

  template <typename... StreamArgs>
  Connection(ServerCore& core, std::string remote, bool counted, StreamArgs&&... stream_args)
      : core_(core),
        id_(core.next_id.fetch_add(1)),
        remote_(std::move(remote)),
        counted_(counted),
        stream_(std::forward<StreamArgs>(stream_args)...) {}

  ~Connection() override {
    core_.Unregister(id_);
    if (counted_) {
      core_.connections.fetch_sub(1);
    }
  }

  void Start() {
    core_.Register(id_, this->weak_from_this());
    if constexpr (kTls) {
      Socket().expires_after(core_.options.header_timeout);
      stream_.async_handshake(asio::ssl::stream_base::server, [self = this->shared_from_this()](
                                                                  const error_code& ec) {
        if (ec) {
          self->core_.logger.Debug("TLS handshake with {} failed: {}", self->remote_, ec.message());
          self->CloseNow();
          return;
        }
        self->Begin();
      });
    } else {
      Begin();
    }
  }

  void PostClose() override {
    asio::post(stream_.get_executor(), [self = this->shared_from_this()] { self->CloseNow(); });
  }

 private:
  beast::tcp_stream& Socket() { return beast::get_lowest_layer(stream_); }

  void Begin() {
    if (!counted_) {
      Answer(503,
             Unavailable(fmt::format("the server is at its limit of {} connections; retry later",
                                     core_.options.max_connections)),
             true);
      return;
    }
    ReadHead();
  }

  // Between two requests of a keep-alive connection: idle_timeout until the
  // next request starts, then header_timeout for its head.
  void WaitForNext() {
    if (buffer_.size() > 0) {
      ReadHead();
      return;
    }
    Socket().expires_after(core_.options.idle_timeout);
    stream_.async_read_some(buffer_.prepare(4096),
                            [self = this->shared_from_this()](const error_code& ec, size_t bytes) {
                              if (ec) {
                                self->CloseNow();
                                return;
                              }
                              self->buffer_.commit(bytes);
                              self->ReadHead();
                            });
  }

  void ReadHead() {
    request_ = Request{};
    response_ = Response{};
    route_ = nullptr;
    bridge_.reset();
    in_flight_ = false;
    close_after_ = false;
    parser_.emplace();
    parser_->header_limit(static_cast<uint32_t>(core_.options.max_header_bytes));
    // The route's limit is set once the route is known: the declared length
    // is checked against it here, not by the parser. Not boost::none: Beast
    // 1.74 compares a declared length against an empty limit as exceeding it.
    parser_->body_limit(std::numeric_limits<uint64_t>::max());
    Socket().expires_after(core_.options.header_timeout);
    bhttp::async_read_header(
        stream_, buffer_, *parser_,
        [self = this->shared_from_this()](const error_code& ec, size_t) { self->OnHead(ec); });
  }

  void OnHead(const error_code& ec) {
    if (ec == bhttp::error::header_limit) {
      Answer(431,
             InvalidArgument(fmt::format("the request head is larger than the limit of {} bytes",
                                         core_.options.max_header_bytes)),
             true);
      return;
    }
    if (ec == bhttp::error::end_of_stream || ec == beast::error::timeout ||
        ec == asio::error::operation_aborted || ec == asio::error::eof ||
        ec == asio::error::connection_reset || ec.category() == asio::error::get_ssl_category() ||
        ec == asio::ssl::error::stream_truncated) {
      CloseNow();
      return;
    }
    if (ec) {
      Answer(400,
             InvalidArgument(fmt::format("the request is not valid HTTP/1.1: {}", ec.message())),
             true);
      return;
    }
    if (core_.stopping) {
      Answer(503, Unavailable("the server is shutting down"), true);
      return;
    }
    const auto& head = parser_->get();
    keep_alive_ = head.keep_alive();
    http10_ = head.version() < 11;
    request_.method = ToStd(head.method_string());
    request_.target = ToStd(head.target());
    for (const auto& field : head) {
      request_.headers.Add(ToStd(field.name_string()), ToStd(field.value()));
    }
    request_.remote_address = remote_;
    request_.tls = kTls;
    head_request_ = request_.method == "HEAD";
    const bool has_body = !parser_->is_done();
    if (const Status parsed = ParseTarget(request_.target, request_.path, request_.query);
        !parsed.ok()) {
      Answer(400, parsed, true);
      return;
    }
    RouteLookup lookup = FindRoute(core_.routes, request_.method, request_.path);
    if (lookup.route == nullptr) {
      if (lookup.allowed.empty()) {
        Answer(404,
               NotFound(fmt::format("no such endpoint: {} {}", request_.method, request_.path)),
               has_body);
      } else {
        response_.headers.Set("Allow", lookup.allowed);
        Answer(405,
               InvalidArgument(fmt::format("{} does not take {}; it allows {}", request_.path,
                                           request_.method, lookup.allowed)),
               has_body);
      }
      return;
    }
    route_ = lookup.route;
    request_.matches = std::move(lookup.matches);
    limit_ = route_->options.max_body_bytes != 0 ? route_->options.max_body_bytes
                                                 : core_.options.max_body_bytes;
    if (const auto declared = parser_->content_length(); declared && *declared > limit_) {
      Answer(413,
             ResourceExhausted(
                 fmt::format("the request body of {} bytes is larger than the limit of {} bytes",
                             *declared, limit_)),
             true);
      return;
    }
    const std::string encoding = request_.headers.Value("Content-Encoding");
    if (has_body && route_->options.body == BodyMode::kBuffered && !SupportedEncoding(encoding)) {
      Answer(415,
             InvalidArgument(fmt::format(
                 "unsupported Content-Encoding '{}': send gzip, deflate, br or none", encoding)),
             true);
      return;
    }
    parser_->body_limit(limit_);
    if (has_body && IgnoreCaseEqual(request_.headers.Value("Expect"), "100-continue")) {
      static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      Socket().expires_after(core_.options.write_timeout);
      asio::async_write(stream_, asio::buffer(kContinue.data(), kContinue.size()),
                        [self = this->shared_from_this()](const error_code& error, size_t) {
                          if (error) {
                            self->CloseNow();
                            return;
                          }
                          self->StartBody();
                        });
      return;
    }
    StartBody();
  }

  std::optional<uint64_t> DeclaredLength() const {
    const auto declared = parser_->content_length();
    return declared ? std::optional<uint64_t>(*declared) : std::nullopt;
  }

  void StartBody() {
    if (route_->options.body == BodyMode::kStreamed) {
      // Weak: the bridge belongs to this connection; while a handler reads
      // from it, the handler's task holds the connection.
      bridge_ = std::make_unique<BodyBridge>(
          [weak = this->weak_from_this(), executor = stream_.get_executor()] {
            asio::post(executor, [weak] {
              if (auto self = weak.lock()) {
                self->ReadStreamPiece();
              }
            });
          },
          DeclaredLength());
      request_.stream = bridge_.get();
      Dispatch();
      return;
    }
    ReadBody();
  }

  // Reads the next piece of the body into piece_; `then` gets the byte
  // count, or the connection is answered (413) or closed.
  template <typename Then>
  void ReadPiece(Then then) {
    // Small until the client shows it sends more: a thousand clients that
    // declare a large body and trickle it must not cost 64 KiB each.
    piece_.resize(piece_bytes_);
    auto& body = parser_->get().body();
    body.data = piece_.data();
    body.size = piece_.size();
    body.more = true;
    Socket().expires_after(core_.options.body_timeout);
    bhttp::async_read_some(
        stream_, buffer_, *parser_,
        [self = this->shared_from_this(), then = std::move(then)](error_code ec, size_t) {
          if (ec == bhttp::error::need_buffer) {
            ec = {};
          }
          const size_t got = self->piece_.size() - self->parser_->get().body().size;
          if (got == self->piece_.size()) {
            self->piece_bytes_ = std::min(kPieceBytes, self->piece_bytes_ * 2);
          }
          then(ec, got);
        });
  }

  void ReadBody() {
    if (parser_->is_done()) {
      FinishBufferedBody();
      return;
    }
    ReadPiece([this](const error_code& ec, size_t got) {
      if (ec == bhttp::error::body_limit) {
        Answer(413, BodyTooLarge(), true);
        return;
      }
      if (IsMalformed(ec)) {
        Answer(400, InvalidArgument(fmt::format("the request body is malformed: {}", ec.message())),
               true);
        return;
      }
      if (ec) {
        core_.logger.Debug("{}: the request body did not arrive: {}", remote_, ec.message());
        CloseNow();
        return;
      }
      request_.body.append(piece_.data(), got);
      ReadBody();
    });
  }

  Status BodyTooLarge() const {
    return ResourceExhausted(
        fmt::format("the request body is larger than the limit of {} bytes", limit_));
  }

  void FinishBufferedBody() {
    const std::string encoding = request_.headers.Value("Content-Encoding");
    if (!encoding.empty() && !IgnoreCaseEqual(encoding, "identity")) {
      Result<std::string> decoded = Decompress(encoding, std::move(request_.body), limit_);
      if (!decoded.ok()) {
        const bool too_large = decoded.status().code() == StatusCode::kResourceExhausted;
        Answer(too_large ? 413 : 400, decoded.status(), false);
        return;
      }
      request_.body = std::move(decoded).value();
      request_.headers.Remove("Content-Encoding");
    }
    Dispatch();
  }

  // On the strand, asked for by the handler thread through the bridge.
  void ReadStreamPiece() {
    if (!bridge_) {
      return;
    }
    if (!Socket().socket().is_open()) {
      bridge_->Fail(Unavailable("the client closed the connection"));
      return;
    }
    if (parser_->is_done()) {
      bridge_->Deliver(nullptr, 0, true);
      return;
    }
    ReadPiece([this](const error_code& ec, size_t got) {
      if (ec == bhttp::error::body_limit) {
        bridge_->Fail(BodyTooLarge());
        return;
      }
      if (IsMalformed(ec)) {
        bridge_->Fail(
            InvalidArgument(fmt::format("the request body is malformed: {}", ec.message())));
        return;
      }
      if (ec) {
        bridge_->Fail(
            Unavailable(ec == beast::error::timeout
                            ? fmt::format("the client sent no body bytes within {} ms",
                                          core_.options.body_timeout.count())
                            : fmt::format("the request body did not arrive: {}", ec.message())));
        return;
      }
      if (got == 0 && !parser_->is_done()) {
        ReadStreamPiece();  // a chunk header only
        return;
      }
      bridge_->Deliver(piece_.data(), got, got == 0 && parser_->is_done());
    });
  }

  void Dispatch() {
    in_flight_ = true;
    handler_running_ = true;
    core_.BeginRequest();
    core_.pool->Post([self = this->shared_from_this()] { self->RunHandler(); });
  }

  // On a handler thread.
  void RunHandler() {
    try {
      route_->handler(request_, response_);
    } catch (const std::exception& e) {
      core_.logger.Error("{} {} failed: {}", request_.method, request_.path, e.what());
      response_ = Response{};
      SetError(response_, Internal(fmt::format("internal error: {}", e.what())));
    } catch (...) {
      core_.logger.Error("{} {} failed with an unknown exception", request_.method, request_.path);
      response_ = Response{};
      SetError(response_, Internal("internal error"));
    }
    if (bridge_ != nullptr) {
      if (bridge_->too_large()) {
        response_ = Response{};
        SetJson(response_, 413, ErrorJson(BodyTooLarge()));
        response_.close = true;
      } else if (!bridge_->complete()) {
        response_.close = true;
      }
    }
    asio::post(stream_.get_executor(), [self = this->shared_from_this()] {
      self->handler_running_ = false;
      self->Write();
    });
  }

  // An answer the server makes itself, on the strand.
  void Answer(int status, const Status& error, bool close) {
    response_.headers.Set("Content-Type", "application/json");
    response_.status = status;
    response_.body = ErrorJson(error);
    response_.close = close;
    Write();
  }

  void Write() {
    close_after_ = response_.close || !keep_alive_ || core_.stopping;
    std::optional<uint64_t> length;
    if (response_.status != 204 && response_.status != 304) {
      length = response_.content ? response_.content->length : response_.body.size();
      if (head_request_ && !response_.content && response_.body.empty()) {
        // A HEAD route may state the length of what a GET would send.
        const auto stated = response_.headers.Get("Content-Length");
        uint64_t value = 0;
        if (stated && std::from_chars(stated->data(), stated->data() + stated->size(), value).ec ==
                          std::errc()) {
          length = value;
        }
      }
    }
    head_ = SerializeAnswerHead(response_.headers, {.status = response_.status,
                                                    .reason = ReasonFor(response_.status),
                                                    .content_length = length,
                                                    .close = close_after_,
                                                    .keep_alive = http10_ && !close_after_,
                                                    .server = core_.options.server_header});
    head_written_ = false;
    written_ = 0;
    WriteNext();
  }

  void WriteNext() {
    std::array<asio::const_buffer, 2> buffers{};
    if (!head_written_) {
      buffers[0] = asio::buffer(head_);
    }
    size_t body_bytes = 0;
    if (!head_request_ && response_.content) {
      const uint64_t remaining = response_.content->length - written_;
      if (remaining > 0) {
        piece_.resize(kPieceBytes);
        const size_t capacity = static_cast<size_t>(std::min<uint64_t>(remaining, piece_.size()));
        Result<size_t> read = response_.content->read(written_, piece_.data(), capacity);
        if (!read.ok() || *read == 0) {
          core_.logger.Warn("{} {}: the answer's body ended early at byte {}: {}", request_.method,
                            request_.path, written_,
                            read.ok() ? "no more bytes" : read.status().ToString());
          CloseNow();
          return;
        }
        body_bytes = std::min(*read, capacity);
        buffers[1] = asio::buffer(piece_.data(), body_bytes);
      }
    } else if (!head_request_) {
      body_bytes = std::min<size_t>(response_.body.size() - written_, kWriteSliceBytes);
      buffers[1] = asio::buffer(response_.body.data() + written_, body_bytes);
    }
    if (head_written_ && body_bytes == 0) {
      Written();
      return;
    }
    Socket().expires_after(core_.options.write_timeout);
    asio::async_write(stream_, buffers,
                      [self = this->shared_from_this(), body_bytes](const error_code& ec, size_t) {
                        if (ec) {
                          self->core_.logger.Debug("{}: the answer could not be written: {}",
                                                   self->remote_, ec.message());
                          self->CloseNow();
                          return;
                        }
                        self->head_written_ = true;
                        self->written_ += body_bytes;
                        self->WriteNext();
                      });
  }

  // The request no longer counts as in flight once its handler returned
  // and its answer is written, or the connection is gone.
  void EndInFlight() {
    if (in_flight_ && !handler_running_) {
      in_flight_ = false;
      core_.EndRequest();
    }
  }

  void Written() {
    EndInFlight();
    if (close_after_) {
      Linger();
      return;
    }
    // The handler may not have read a streamed body to its end.
    if (!parser_->is_done()) {
      Linger();
      return;
    }
    WaitForNext();
  }

  // Stops sending, then reads and drops what the client still sends, for a
  // short while, before closing.
  void Linger() {
    if constexpr (!kTls) {
      error_code ignored;
      Socket().socket().shutdown(tcp::socket::shutdown_send, ignored);
    }
    Socket().expires_after(kLingerTime);
    Drain();
  }

  void Drain() {
    piece_.resize(kFirstPieceBytes);
    stream_.async_read_some(asio::buffer(piece_),
                            [self = this->shared_from_this()](const error_code& ec, size_t bytes) {
                              self->lingered_ += bytes;
                              if (ec || self->lingered_ > kLingerBytes) {
                                self->CloseNow();
                                return;
                              }
                              self->Drain();
                            });
  }

  void CloseNow() {
    EndInFlight();
    if (bridge_) {
      bridge_->Fail(Unavailable("the connection was closed"));
    }
    error_code ignored;
    Socket().socket().shutdown(tcp::socket::shutdown_both, ignored);
    Socket().close();
  }

  ServerCore& core_;
  const uint64_t id_;
  const std::string remote_;
  const bool counted_;  // false: over max_connections, answered 503
  Stream stream_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::buffer_body>> parser_;
  std::vector<char> piece_;
  size_t piece_bytes_ = kFirstPieceBytes;  // the next body read's size
  std::string head_;

  // The exchange in progress.
  Request request_;
  Response response_;
  const CompiledRoute* route_ = nullptr;
  std::unique_ptr<BodyBridge> bridge_;
  size_t limit_ = 0;
  bool keep_alive_ = false;
  bool http10_ = false;
  bool head_request_ = false;
  bool in_flight_ = false;        // counted in ServerCore::in_flight
  bool handler_running_ = false;  // request_ and response_ belong to the handler thread
  bool close_after_ = false;
  bool head_written_ = false;
  uint64_t written_ = 0;
  size_t lingered_ = 0;
};

std::string EndpointText(const tcp::endpoint& endpoint) {
  const auto address = endpoint.address();
  return address.is_v6() ? fmt::format("[{}]:{}", address.to_string(), endpoint.port())
                         : fmt::format("{}:{}", address.to_string(), endpoint.port());
}

Status CheckReadable(const std::string& path, std::string_view what) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return NotFound(
        fmt::format("the TLS {} file '{}' does not exist or is not a file", what, path));
  }
  if (!std::ifstream(path).good()) {
    return NotFound(fmt::format("the TLS {} file '{}' cannot be read", what, path));
  }
  return Status::Ok();
}

// The soft limit of open files raised to the hard limit: every connection
// holds a descriptor, and the default soft limit (1024) is below what a
// server under many slow clients needs.
void RaiseOpenFileLimit(const Logger& logger) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur >= limit.rlim_max) {
    return;
  }
  const rlim_t before = limit.rlim_cur;
  limit.rlim_cur = limit.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &limit) == 0) {
    logger.Debug("open file limit raised from {} to {}", before, limit.rlim_cur);
  }
}

}  // namespace

class Server::Impl {
 public:
  Impl(ServerOptions options, Logger logger, std::optional<asio::ssl::context> tls)
      : core_(std::move(options), std::move(logger)),
        tls_(std::move(tls)),
        acceptor_(asio::make_strand(io_)),
        retry_timer_(acceptor_.get_executor()) {}

  ~Impl() { Stop(); }

  void Route(std::string_view method, std::string pattern, Handler handler, RouteOptions options) {
    std::regex compiled;
    try {
      compiled = std::regex(pattern, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      // A programmer's error in a route table, never user input.
      core_.logger.Error("route {} {}: the pattern is not a valid regular expression: {}", method,
                         pattern, e.what());
      std::abort();
    }
    core_.routes.push_back(CompiledRoute{.method = std::string(method),
                                         .pattern = std::move(compiled),
                                         .handler = std::move(handler),
                                         .options = options});
  }

  Status Start() {
    if (started_) {
      return InvalidArgument("the HTTP server is already started");
    }
    const ServerOptions& options = core_.options;
    error_code ec;
    tcp::resolver resolver(io_);
    const auto endpoints =
        resolver.resolve(options.host, std::to_string(options.port),
                         tcp::resolver::passive | tcp::resolver::numeric_service, ec);
    if (ec || endpoints.empty()) {
      return Unavailable(fmt::format("cannot listen on {}:{}: the host does not resolve: {}",
                                     options.host, options.port, ec.message()));
    }
    const tcp::endpoint endpoint = endpoints.begin()->endpoint();
    if (acceptor_.open(endpoint.protocol(), ec);
        !ec && (acceptor_.set_option(asio::socket_base::reuse_address(true), ec), !ec) &&
        (acceptor_.bind(endpoint, ec), !ec)) {
      acceptor_.listen(options.listen_backlog, ec);
    }
    if (ec) {
      error_code ignored;
      acceptor_.close(ignored);
      return Unavailable(
          fmt::format("cannot listen on {}:{}: {}", options.host, options.port, ec.message()));
    }
    port_ = acceptor_.local_endpoint().port();
    RaiseOpenFileLimit(core_.logger);
    core_.pool = std::make_unique<HandlerPool>(options.handler_threads);
    started_ = true;
    // Work that the io_context cannot see (a handler running on a handler
    // thread) must not let io_.run() return.
    work_.emplace(io_.get_executor());
    Accept();
    io_threads_.reserve(static_cast<size_t>(options.io_threads));
    for (int i = 0; i < options.io_threads; ++i) {
      io_threads_.emplace_back([this] { io_.run(); });
    }
    return Status::Ok();
  }

  void Stop() {
    if (!started_ || stopped_) {
      return;
    }
    stopped_ = true;
    core_.stopping = true;
    std::promise<void> closed;
    asio::post(acceptor_.get_executor(), [this, &closed] {
      error_code ignored;
      acceptor_.close(ignored);
      retry_timer_.cancel();
      closed.set_value();
    });
    closed.get_future().wait();
    {
      std::unique_lock lock(core_.mutex);
      if (!core_.changed.wait_for(lock, core_.options.drain_timeout,
                                  [this] { return core_.in_flight == 0; })) {
        core_.logger.Warn("stopping with {} requests still in flight after {} ms", core_.in_flight,
                          core_.options.drain_timeout.count());
      }
    }
    CloseConnections();
    // Handlers still running finish here; one waiting for a body piece was
    // woken by its connection closing.
    core_.pool->Stop();
    {
      std::unique_lock lock(core_.mutex);
      core_.changed.wait_for(lock, std::chrono::seconds(2), [this] { return core_.open.empty(); });
    }
    work_.reset();
    io_.stop();
    for (std::thread& thread : io_threads_) {
      thread.join();
    }
  }

  int port() const { return port_; }
  std::string_view scheme() const { return tls_ ? "https" : "http"; }

 private:
  void Accept() {
    acceptor_.async_accept(asio::make_strand(io_), [this](const error_code& ec,
                                                          tcp::socket socket) {
      if (ec == asio::error::operation_aborted || core_.stopping) {
        return;
      }
      if (ec) {
        // Out of descriptors (EMFILE): accepting again at once would spin.
        core_.logger.Warn("accepting a connection failed: {}; retrying in 100 ms", ec.message());
        retry_timer_.expires_after(std::chrono::milliseconds(100));
        retry_timer_.async_wait([this](const error_code& error) {
          if (!error && !core_.stopping) {
            Accept();
          }
        });
        return;
      }
      OnAccepted(std::move(socket));
      Accept();
    });
  }

  void OnAccepted(tcp::socket socket) {
    error_code ec;
    socket.set_option(tcp::no_delay(true), ec);
    const tcp::endpoint remote = socket.remote_endpoint(ec);
    if (ec) {
      return;  // already gone
    }
    const bool counted = core_.connections.fetch_add(1) < core_.options.max_connections;
    if (!counted) {
      core_.connections.fetch_sub(1);
    }
    if (tls_) {
      std::make_shared<Connection<asio::ssl::stream<beast::tcp_stream>>>(
          core_, EndpointText(remote), counted, std::move(socket), *tls_)
          ->Start();
    } else {
      std::make_shared<Connection<beast::tcp_stream>>(core_, EndpointText(remote), counted,
                                                      std::move(socket))
          ->Start();
    }
  }

  void CloseConnections() {
    std::vector<std::shared_ptr<ConnectionBase>> open;
    {
      const std::lock_guard lock(core_.mutex);
      for (const auto& [id, connection] : core_.open) {
        if (auto alive = connection.lock()) {
          open.push_back(std::move(alive));
        }
      }
    }
    for (const auto& connection : open) {
      connection->PostClose();
    }
  }

  // Destroyed last to first: io_ (and the connections its pending
  // operations hold) before core_, which they point to.
  ServerCore core_;
  std::optional<asio::ssl::context> tls_;
  asio::io_context io_;
  tcp::acceptor acceptor_;          // on its own strand
  asio::steady_timer retry_timer_;  // on the acceptor's strand
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;
  std::vector<std::thread> io_threads_;
  int port_ = 0;
  bool started_ = false;
  bool stopped_ = false;
};

namespace {

Result<asio::ssl::context> LoadTls(const TlsOptions& tls) {
  if (tls.key_file.empty()) {
    return InvalidArgument("a TLS certificate needs its private key (the TLS key file)");
  }
  PERCH_RETURN_IF_ERROR(CheckReadable(tls.cert_file, "certificate"));
  PERCH_RETURN_IF_ERROR(CheckReadable(tls.key_file, "key"));
  if (!tls.client_ca_file.empty()) {
    PERCH_RETURN_IF_ERROR(CheckReadable(tls.client_ca_file, "client CA"));
  }
  asio::ssl::context context(asio::ssl::context::tls_server);
  context.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                      asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                      asio::ssl::context::no_tlsv1_1 | asio::ssl::context::single_dh_use);
  error_code ec;
  if (context.use_certificate_chain_file(tls.cert_file, ec); ec) {
    return InvalidArgument(
        fmt::format("the TLS certificate file '{}' does not hold a PEM certificate: {}",
                    tls.cert_file, ec.message()));
  }
  if (context.use_private_key_file(tls.key_file, asio::ssl::context::pem, ec); ec) {
    // OpenSSL checks the key against the certificate as it loads it.
    if (ec.category() == asio::error::get_ssl_category() &&
        ERR_GET_REASON(static_cast<unsigned long>(ec.value())) == X509_R_KEY_VALUES_MISMATCH) {
      return InvalidArgument(
          fmt::format("the TLS key in '{}' does not belong to the certificate in '{}'",
                      tls.key_file, tls.cert_file));
    }
    return InvalidArgument(fmt::format("the TLS key file '{}' does not hold a PEM private key: {}",
                                       tls.key_file, ec.message()));
  }
  if (SSL_CTX_check_private_key(context.native_handle()) != 1) {
    return InvalidArgument(
        fmt::format("the TLS key in '{}' does not belong to the certificate in '{}'", tls.key_file,
                    tls.cert_file));
  }
  if (!tls.client_ca_file.empty()) {
    if (context.load_verify_file(tls.client_ca_file, ec); ec) {
      return InvalidArgument(
          fmt::format("the TLS client CA file '{}' does not hold a PEM certificate: {}",
                      tls.client_ca_file, ec.message()));
    }
    context.set_verify_mode(asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert, ec);
  }
  return context;
}

}  // namespace

Result<std::unique_ptr<Server>> Server::Create(ServerOptions options, Logger logger) {
  if (options.host.empty()) {
    return InvalidArgument("the HTTP server needs a host to listen on");
  }
  if (options.port < 0 || options.port > 65535) {
    return InvalidArgument(fmt::format("port {} is not between 0 and 65535", options.port));
  }
  if (options.io_threads < 1 || options.handler_threads < 1) {
    return InvalidArgument("the HTTP server needs at least 1 I/O thread and 1 handler thread");
  }
  if (options.max_connections < 1 || options.max_header_bytes < 1024 ||
      options.max_header_bytes > (1u << 30) || options.max_body_bytes < 1) {
    return InvalidArgument(
        "the HTTP server needs max_connections >= 1, max_header_bytes between 1 KiB and 1 GiB "
        "and max_body_bytes >= 1");
  }
  using std::chrono::milliseconds;
  for (const milliseconds timeout : {options.header_timeout, options.body_timeout,
                                     options.idle_timeout, options.write_timeout}) {
    if (timeout <= milliseconds::zero()) {
      return InvalidArgument("the HTTP server's header, body, idle and write timeouts must be > 0");
    }
  }
  if (options.tls.cert_file.empty() &&
      (!options.tls.key_file.empty() || !options.tls.client_ca_file.empty())) {
    return InvalidArgument("a TLS key or client CA needs a TLS certificate as well");
  }
  std::optional<asio::ssl::context> tls;
  if (options.tls.enabled()) {
    PERCH_ASSIGN_OR_RETURN(asio::ssl::context context, LoadTls(options.tls));
    tls.emplace(std::move(context));
  }
  return std::unique_ptr<Server>(
      new Server(std::make_unique<Impl>(std::move(options), std::move(logger), std::move(tls))));
}

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Server::~Server() { Stop(); }

void Server::Route(std::string_view method, std::string pattern, Handler handler,
                   RouteOptions options) {
  impl_->Route(method, std::move(pattern), std::move(handler), options);
}

Status Server::Start() { return impl_->Start(); }
void Server::Stop() { impl_->Stop(); }
int Server::port() const { return impl_->port(); }
std::string_view Server::scheme() const { return impl_->scheme(); }

}  // namespace perch::http
