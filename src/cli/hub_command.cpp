// `perch hub`: the OCI registry and the fleet API on one HTTP
// port, until SIGINT or SIGTERM; `perch hub gc` frees blobs that no manifest
// needs.
#include <fcntl.h>
#include <httplib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "cli/commands.h"
#include "core/log.h"
#include "fleet/fleet_http.h"
#include "fleet/fleet_store.h"
#include "store/access.h"
#include "store/registry.h"
#include "store/registry_http.h"

namespace perch::cli {
namespace {

namespace fs = std::filesystem;

struct HubOptions {
  std::string data;
  std::string host = "127.0.0.1";
  int port = 8080;
  uint64_t max_blob_bytes = uint64_t{16} << 30;
  uint64_t max_manifest_bytes = 4 << 20;
  int threads = 16;
  std::string log_level = "info";
  std::string admin_token_file;
  std::string device_token_file;
  bool anonymous_pull = true;
};

struct HubGcOptions {
  std::string data;
  bool dry_run = false;
  int64_t grace_seconds = 3600;
  std::string log_level = "info";
};

int Fail(const Logger& logger, const Status& status) {
  logger.Error("{}", status.message());
  return 1;
}

std::string Trim(std::string text) {
  const auto space = [](char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; };
  while (!text.empty() && space(text.back())) {
    text.pop_back();
  }
  size_t start = 0;
  while (start < text.size() && space(text[start])) {
    ++start;
  }
  return text.substr(start);
}

Result<std::string> ReadTokenFile(const fs::path& path) {
  std::ifstream in(path);
  if (!in) {
    return NotFound("cannot read the token file " + path.string());
  }
  std::stringstream text;
  text << in.rdbuf();
  std::string token = Trim(text.str());
  if (token.empty()) {
    return InvalidArgument("the token file " + path.string() + " is empty");
  }
  return token;
}

std::string FromEnvironment(const char* name) {
  const char* value = std::getenv(name);
  return value ? Trim(value) : std::string();
}

// The admin token: --admin-token-file, else PERCH_HUB_ADMIN_TOKEN, else
// DATA/admin-token, generated (mode 0600) on the first start.
Result<std::string> LoadAdminToken(const HubOptions& options, const Logger& logger) {
  if (!options.admin_token_file.empty()) {
    return ReadTokenFile(options.admin_token_file);
  }
  if (std::string token = FromEnvironment("PERCH_HUB_ADMIN_TOKEN"); !token.empty()) {
    return token;
  }
  const fs::path path = fs::path(options.data) / "admin-token";
  if (fs::exists(path)) {
    logger.Info("admin token: {}", path.string());
    return ReadTokenFile(path);
  }
  PERCH_ASSIGN_OR_RETURN(const std::string token, GenerateToken());
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    return Internal("cannot create " + path.string() + ": " + std::strerror(errno));
  }
  const std::string line = token + "\n";
  const bool written = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()) &&
                       ::fsync(fd) == 0;
  ::close(fd);
  if (!written) {
    fs::remove(path);
    return Internal("cannot write " + path.string());
  }
  logger.Info("generated an admin token into {} (readable by this user only)", path.string());
  return token;
}

Result<AccessTokens> LoadTokens(const HubOptions& options, const Logger& logger) {
  AccessTokens tokens;
  tokens.anonymous_pull = options.anonymous_pull;
  PERCH_ASSIGN_OR_RETURN(tokens.admin, LoadAdminToken(options, logger));
  if (!options.device_token_file.empty()) {
    PERCH_ASSIGN_OR_RETURN(tokens.device, ReadTokenFile(options.device_token_file));
  } else {
    tokens.device = FromEnvironment("PERCH_HUB_DEVICE_TOKEN");
  }
  if (!tokens.device.empty() && tokens.device == tokens.admin) {
    return InvalidArgument("the device token must differ from the admin token");
  }
  for (const std::string* token : {&tokens.admin, &tokens.device}) {
    if (!token->empty() && token->size() < 16) {
      logger.Warn("a hub token has only {} characters: use at least 16 random ones", token->size());
    }
  }
  return tokens;
}

// cpp-httplib listens with a backlog of 5 (CPPHTTPLIB_LISTEN_BACKLOG, fixed
// when the system's library was built). Agents open a connection per request,
// so a fleet of thousands overflows 5 whenever the accept thread is off the
// CPU for a few milliseconds, and every dropped SYN costs a device a 1 s
// retransmission (the fleet benchmark's p99 was 1 s because of it). A second
// listen() on the bound socket raises the backlog (capped by
// net.core.somaxconn).
constexpr int kListenBacklog = 4096;

void ConfigureServer(httplib::Server& server, const HubOptions& options, const Logger& logger,
                     std::shared_ptr<socket_t> listen_socket) {
  const int threads = options.threads;
  server.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  // Registry routes stream bodies and count them against their own limits
  // (--max-blob-bytes, the manifest limit); the library's check would only
  // see Content-Length. Routes added later must bound what they read.
  server.set_payload_max_length(std::numeric_limits<size_t>::max());
  server.set_read_timeout(60, 0);
  server.set_write_timeout(60, 0);
  server.set_keep_alive_max_count(100000);
  server.set_tcp_nodelay(true);
  // SO_REUSEADDR only: SO_REUSEPORT would let a second hub share the port.
  // Also remembers the socket, for the backlog (see kListenBacklog); the
  // last one offered is the one that was bound.
  server.set_socket_options([listen_socket = std::move(listen_socket)](socket_t socket) {
    const int yes = 1;
    setsockopt(socket, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    *listen_socket = socket;
  });
  server.set_exception_handler([logger](const httplib::Request& request,
                                        httplib::Response& response,
                                        const std::exception_ptr& error) {
    std::string what = "unknown error";
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    logger.Error("{} {} failed: {}", request.method, request.path, what);
    response.status = 500;
    response.set_content(nlohmann::json{{"error", "internal error: " + what}}.dump(),
                         "application/json");
  });
  server.set_error_handler([](const httplib::Request& request, httplib::Response& response) {
    if (!response.body.empty()) {
      return;
    }
    const std::string message =
        response.status == 404
            ? "no such endpoint: " + request.method + " " + request.path
            : "the request could not be served (HTTP " + std::to_string(response.status) + ")";
    response.set_content(nlohmann::json{{"error", message}}.dump(), "application/json");
  });
  server.set_logger([logger](const httplib::Request& request, const httplib::Response& response) {
    logger.Debug("{} {} -> {}", request.method, request.path, response.status);
  });
  server.Get("/healthz", [](const httplib::Request&, httplib::Response& response) {
    response.set_content(R"({"status":"ok"})", "application/json");
  });
}

int RunHub(const HubOptions& options) {
  const auto level = LogLevelFromString(options.log_level).value_or(LogLevel::kInfo);
  const Logger logger = Logger::ToStderr(level, "hub");
  if (options.data.empty()) {
    return Fail(logger, InvalidArgument("perch hub needs --data DIR"));
  }
  auto registry = Registry::Open(RegistryOptions{.data = options.data,
                                                 .max_blob_bytes = options.max_blob_bytes,
                                                 .max_manifest_bytes = options.max_manifest_bytes});
  if (!registry.ok()) {
    return Fail(logger, registry.status());
  }
  auto tokens = LoadTokens(options, logger);
  if (!tokens.ok()) {
    return Fail(logger, tokens.status());
  }
  auto fleet = FleetStore::Open(
      FleetStoreOptions{.database = fs::path(options.data) / "fleet.db", .clock = {}});
  if (!fleet.ok()) {
    return Fail(logger, fleet.status());
  }
  // Enrolled devices pull their models with their own tokens.
  tokens->enrolled_device = [&store = **fleet](std::string_view token) {
    return store.AuthenticateDevice(token).ok();
  };
  const sigset_t stop_signals = BlockStopSignals();

  httplib::Server server;
  const auto listen_socket = std::make_shared<socket_t>(INVALID_SOCKET);
  ConfigureServer(server, options, logger.ForComponent("http"), listen_socket);
  MountFleetRoutes(server, **fleet, FleetHttpOptions{.admin_token = tokens->admin},
                   logger.ForComponent("fleet"));
  MountRegistryRoutes(server, **registry, RegistryHttpOptions{.tokens = std::move(tokens).value()},
                      logger.ForComponent("registry"));
  int port = options.port;
  if (options.port == 0) {
    port = server.bind_to_any_port(options.host);
  } else if (!server.bind_to_port(options.host, options.port)) {
    port = -1;
  }
  if (port <= 0) {
    return Fail(logger,
                Unavailable("cannot listen on " + options.host + ":" +
                            std::to_string(options.port) + ": the address is in use or not local"));
  }
  if (::listen(*listen_socket, kListenBacklog) != 0) {
    logger.Warn("cannot raise the listen backlog to {}: {}", kListenBacklog, std::strerror(errno));
  }
  std::thread listener([&server] { server.listen_after_bind(); });
  logger.Info(
      "hub serving the OCI registry on http://{}:{}/v2/ and the fleet API under /api/v1/ "
      "(data in {}, anonymous pulls {})",
      options.host, port, options.data, options.anonymous_pull ? "on" : "off");

  int signal = 0;
  sigwait(&stop_signals, &signal);
  logger.Info("received {}, shutting down", signal == SIGINT ? "SIGINT" : "SIGTERM");
  server.stop();
  listener.join();
  return 0;
}

int RunGc(const HubGcOptions& options) {
  const auto level = LogLevelFromString(options.log_level).value_or(LogLevel::kInfo);
  const Logger logger = Logger::ToStderr(level, "hub-gc");
  if (options.data.empty() || !fs::is_directory(options.data)) {
    return Fail(logger, NotFound("--data '" + options.data + "' is not a hub data folder"));
  }
  auto registry = Registry::Open(RegistryOptions{.data = options.data});
  if (!registry.ok()) {
    return Fail(logger, registry.status());
  }
  auto report = (*registry)->CollectGarbage(
      GcOptions{.dry_run = options.dry_run, .grace = std::chrono::seconds(options.grace_seconds)});
  if (!report.ok()) {
    return Fail(logger, report.status());
  }
  const char* verb = options.dry_run ? "would remove" : "removed";
  for (const BlobInfo& blob : report->removed) {
    std::printf("%s %s (%llu bytes)\n", verb, blob.digest.str().c_str(),
                static_cast<unsigned long long>(blob.size));
  }
  std::printf("%s %zu blobs, %llu bytes; kept %zu blobs; %s %zu stale uploads\n", verb,
              report->removed.size(), static_cast<unsigned long long>(report->removed_bytes),
              report->kept_blobs, verb, report->removed_uploads);
  return 0;
}

}  // namespace

CommandRunner AddHubCommand(CLI::App& app) {
  auto options = std::make_shared<HubOptions>();
  app.require_subcommand(0, 1);
  app.add_option("--data", options->data,
                 "Folder of the hub's state: blobs/, registry.db, admin-token")
      ->envname("PERCH_HUB_DATA");
  app.add_option("--host", options->host, "Address to listen on")
      ->envname("PERCH_HUB_HOST")
      ->capture_default_str();
  app.add_option("--port", options->port, "HTTP port (0: any free port)")
      ->envname("PERCH_HUB_PORT")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  app.add_option("--max-blob-bytes", options->max_blob_bytes,
                 "Largest blob an upload may grow to; one byte more answers 413")
      ->envname("PERCH_HUB_MAX_BLOB_BYTES")
      ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 50))
      ->capture_default_str();
  app.add_option("--max-manifest-bytes", options->max_manifest_bytes, "Largest manifest accepted")
      ->envname("PERCH_HUB_MAX_MANIFEST_BYTES")
      ->check(CLI::Range(uint64_t{1024}, uint64_t{64} << 20))
      ->capture_default_str();
  app.add_option("--threads", options->threads,
                 "HTTP threads; each open keep-alive connection holds one")
      ->envname("PERCH_HUB_THREADS")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  app.add_option("--admin-token-file", options->admin_token_file,
                 "File holding the admin token (pushes and deletes). Else PERCH_HUB_ADMIN_TOKEN, "
                 "else DATA/admin-token, generated on the first start")
      ->check(CLI::ExistingFile);
  app.add_option("--device-token-file", options->device_token_file,
                 "File holding the device token (pulls only). Else PERCH_HUB_DEVICE_TOKEN")
      ->check(CLI::ExistingFile);
  app.add_flag("--anonymous-pull,!--no-anonymous-pull", options->anonymous_pull,
               "Allow pulls without a token")
      ->envname("PERCH_HUB_ANONYMOUS_PULL")
      ->capture_default_str();
  app.add_option("--log-level", options->log_level, "debug, info, warn or error")
      ->envname("PERCH_LOG_LEVEL")
      ->check(CLI::IsMember({"debug", "info", "warn", "error"}))
      ->capture_default_str();

  auto gc_options = std::make_shared<HubGcOptions>();
  auto* gc = app.add_subcommand(
      "gc", "Remove blobs no manifest references, and stale partial uploads, then exit");
  gc->add_option("--data", gc_options->data, "The hub's data folder")
      ->envname("PERCH_HUB_DATA")
      ->required();
  gc->add_flag("--dry-run", gc_options->dry_run, "Print what would be removed; remove nothing");
  gc->add_option("--grace", gc_options->grace_seconds,
                 "Keep unreferenced blobs and uploads younger than SECONDS (a push in progress "
                 "has uploaded its blobs but not yet its manifest)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40))
      ->capture_default_str();
  gc->add_option("--log-level", gc_options->log_level, "debug, info, warn or error")
      ->check(CLI::IsMember({"debug", "info", "warn", "error"}))
      ->capture_default_str();

  return [options, gc_options, gc] {
    if (gc->parsed()) {
      return RunGc(*gc_options);
    }
    return RunHub(*options);
  };
}

}  // namespace perch::cli
