// Internal to http/: one client connection of http::Server, as an Asio
// state machine over a plain or TLS stream. Included by server.cpp only, so
// that Beast and Asio stay out of every other file. Not a public header.
//
// Threading: every step runs on the connection's strand, but the handler,
// which runs on a handler thread unless its route runs it inline (see
// Connection below).
#pragma once

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <charconv>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "http/body_bridge.h"
#include "http/decompress.h"
#include "http/errors.h"
#include "http/server_core.h"
#include "http/wire.h"

namespace perch::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;

constexpr size_t kPieceBytes = 64 << 10;      // one body read at most, one streamed write
constexpr size_t kFirstPieceBytes = 4 << 10;  // a connection's first body read
// A buffered body with at least this much still to come is read in reads of
// this size, with the socket's receive low-water mark at it, so the
// connection wakes once per 64 KiB, not once per segment: a 600 KB image
// arrived in ~130 reads of at most 512 bytes, each a wake-up, a timer update
// and a syscall (profiled on a forwarding agent, where they were most of its
// time per request).
constexpr size_t kLargeReadBytes = 64 << 10;
constexpr size_t kWriteSliceBytes = 256 << 10;  // one write of a buffered answer
// After an answer that closes the connection with request bytes unread, how
// long the rest is read and dropped: closing at once would reset the
// connection and could destroy the answer before the client reads it.
constexpr std::chrono::seconds kLingerTime{2};
constexpr size_t kLingerBytes = 1 << 20;
constexpr size_t kMaxPathBytes = 4096;  // decoded; longer paths answer 414

inline std::string ToStd(beast::string_view text) { return std::string(text.data(), text.size()); }

// A body the parser refused (a bad chunk), as opposed to one that stopped arriving.
inline bool IsMalformed(const error_code& ec) {
  return ec.category() == bhttp::make_error_code(bhttp::error::bad_chunk).category() &&
         ec != bhttp::error::end_of_stream && ec != bhttp::error::partial_message &&
         ec != bhttp::error::body_limit && ec != bhttp::error::need_buffer;
}

inline std::string_view ReasonFor(int status) {
  const beast::string_view text =
      bhttp::obsolete_reason(bhttp::int_to_status(static_cast<unsigned>(status)));
  const std::string_view reason(text.data(), text.size());
  return reason.empty() || reason.front() == '<' ? std::string_view("Unknown") : reason;
}

inline bool IgnoreCaseEqual(std::string_view a, std::string_view b) {
  return beast::iequals(beast::string_view(a.data(), a.size()),
                        beast::string_view(b.data(), b.size()));
}

// One client connection: reads a request head, routes it, reads or streams
// its body, runs the handler on a handler thread (or inline, when its
// route's run_inline says so), writes the answer, and waits for the next
// request. Every step but a handler thread's runs on the connection's
// strand; the handler thread touches request_ and response_ only while the
// strand leaves them alone (between Dispatch and Write).
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
    SetLowWatermark(1);
    if (buffer_.capacity() > kLargeReadBytes / 2) {
      buffer_.shrink_to_fit();  // an idle connection keeps no large-body buffer
    }
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
    if (request_.path.size() > kMaxPathBytes) {
      // std::regex matches recursively, a frame per character: a longer
      // path could exhaust an I/O thread's stack.
      Answer(
          414,
          InvalidArgument(fmt::format("the request path is longer than {} bytes", kMaxPathBytes)),
          has_body);
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
    if (BodyBytesToArrive() >= kLargeReadBytes) {
      // The read buffer's free room is the size of the next socket read.
      buffer_.reserve(buffer_.size() + kLargeReadBytes);
      SetLowWatermark(kLargeReadBytes);
    } else {
      SetLowWatermark(1);
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

  // What of the declared body the socket has still to deliver (0 when not
  // known): the parser's remainder less what is read and not yet parsed.
  // Only plain TCP: under TLS the bytes on the socket are not the body's.
  uint64_t BodyBytesToArrive() const {
    if constexpr (kTls) {
      return 0;
    } else {
      const auto remaining = parser_->content_length_remaining();
      return remaining && *remaining > buffer_.size() ? *remaining - buffer_.size() : 0;
    }
  }

  // Never above what is still to arrive, or a read would wait for bytes
  // that never come; back to 1 before a head is read.
  void SetLowWatermark(size_t bytes) {
    if (bytes == low_watermark_) {
      return;
    }
    error_code ignored;  // without it, reads only wake more often
    Socket().socket().set_option(asio::socket_base::receive_low_watermark(static_cast<int>(bytes)),
                                 ignored);
    low_watermark_ = bytes;
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
    core_.BeginRequest();
    if (bridge_ == nullptr && route_->options.run_inline && route_->options.run_inline(request_)) {
      RunHandler();
      Write();
      return;
    }
    handler_running_ = true;
    core_.pool->Post([self = this->shared_from_this()] {
      self->RunHandler();
      asio::post(self->stream_.get_executor(), [self] {
        self->handler_running_ = false;
        self->Write();
      });
    });
  }

  // On a handler thread, or on the strand when the route runs it inline.
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
        FillError(413, BodyTooLarge());
        response_.close = true;
      } else if (!bridge_->complete()) {
        response_.close = true;
      }
    }
  }

  // An answer the server makes itself, on the strand.
  void Answer(int status, const Status& error, bool close) {
    FillError(status, error);
    response_.close = close;
    Write();
  }

  // In the matched route's error shape when it has one.
  void FillError(int status, const Status& error) {
    if (route_ != nullptr && route_->options.error_answer) {
      route_->options.error_answer(response_, status, error);
      response_.status = status;
      return;
    }
    SetJson(response_, status, ErrorJson(error));
  }

  void Write() {
    close_after_ = response_.close || !keep_alive_ || core_.stopping;
    std::optional<uint64_t> length;
    if (response_.status == 204 || response_.status == 304) {
      // These answers have no body, whatever the handler left in it.
      response_.body.clear();
      response_.content.reset();
    } else {
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
    SetLowWatermark(1);
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
  size_t low_watermark_ = 1;               // the socket's SO_RCVLOWAT
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

}  // namespace perch::http
