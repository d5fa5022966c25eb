#include "http/server.h"

#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <sys/resource.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <thread>
#include <vector>

#include "http/connection.h"

namespace perch::http {
namespace {

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
        contexts_(MakeContexts(core_.options.io_threads)),
        acceptor_(asio::make_strand(*contexts_.front())),
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
                                         .literal_prefix = LiteralPrefix(pattern),
                                         .handler = std::move(handler),
                                         .options = options});
  }

  Status Start() {
    if (started_) {
      return InvalidArgument("the HTTP server is already started");
    }
    const ServerOptions& options = core_.options;
    error_code ec;
    tcp::resolver resolver(*contexts_.front());
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
    // Work that an io_context cannot see (a handler running on a handler
    // thread) must not let its run() return.
    for (const auto& context : contexts_) {
      work_.emplace_back(context->get_executor());
    }
    Accept();
    io_threads_.reserve(contexts_.size());
    for (const auto& context : contexts_) {
      io_threads_.emplace_back([&io = *context] { io.run(); });
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
    work_.clear();
    for (const auto& context : contexts_) {
      context->stop();
    }
    for (std::thread& thread : io_threads_) {
      thread.join();
    }
  }

  int port() const { return port_; }
  std::string_view scheme() const { return tls_ ? "https" : "http"; }

 private:
  // One io_context per I/O thread, each run by its thread alone: a
  // connection's reads, writes and timers stay on one thread, and an answer
  // posted back from a handler thread wakes that thread and no other. With
  // one io_context shared by all I/O threads, Asio hands each completion
  // from the thread waiting in epoll to one waiting on its condition
  // variable: at concurrency 1 that was four thread wake-ups per request.
  static std::vector<std::unique_ptr<asio::io_context>> MakeContexts(int threads) {
    std::vector<std::unique_ptr<asio::io_context>> contexts;
    for (int i = 0; i < threads; ++i) {
      contexts.push_back(std::make_unique<asio::io_context>(1));
    }
    return contexts;
  }

  void Accept() {
    // Round robin: new connections spread over the I/O threads.
    asio::io_context& io = *contexts_[next_context_++ % contexts_.size()];
    acceptor_.async_accept(asio::make_strand(io), [this](const error_code& ec, tcp::socket socket) {
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

  // Destroyed last to first: the io_contexts (and the connections their
  // pending operations hold) before core_, which they point to.
  ServerCore core_;
  std::optional<asio::ssl::context> tls_;
  std::vector<std::unique_ptr<asio::io_context>> contexts_;  // one per I/O thread
  tcp::acceptor acceptor_;          // on its own strand, on the first io_context
  asio::steady_timer retry_timer_;  // on the acceptor's strand
  size_t next_context_ = 0;         // on the acceptor's strand
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> work_;
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
