// `perch hub`: the OCI registry and the fleet API on one HTTP
// port, until SIGINT or SIGTERM; `perch hub gc` frees blobs that no manifest
// needs.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include "cli/commands.h"
#include "core/log.h"
#include "dashboard/dashboard.h"
#include "fleet/canary_judge.h"
#include "fleet/fleet_http.h"
#include "fleet/fleet_store.h"
#include "fleet/hub_metrics.h"
#include "fleet/metrics_http.h"
#include "http/errors.h"
#include "http/server.h"
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
  http::TlsOptions tls;
  std::string log_level = "info";
  std::string admin_token_file;
  std::string device_token_file;
  bool anonymous_pull = true;
  // Five minutes: longer than an edge server takes to reboot or an agent to
  // be upgraded, and 30 missed heartbeats at the agents' default 10 s, so
  // neither a restart nor a flaky link moves models (and pulls them again
  // elsewhere); short enough that a dead server's models run elsewhere
  // within minutes, while its other replicas answer meanwhile.
  int64_t placement_grace = 300;
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
      FleetStoreOptions{.database = fs::path(options.data) / "fleet.db",
                        .clock = {},
                        .placement_grace = std::chrono::seconds(options.placement_grace)});
  if (!fleet.ok()) {
    return Fail(logger, fleet.status());
  }
  auto metrics =
      MetricsStore::Open(MetricsStoreOptions{.database = fs::path(options.data) / "fleet.db"});
  if (!metrics.ok()) {
    return Fail(logger, metrics.status());
  }
  // Enrolled devices pull their models with their own tokens.
  tokens->enrolled_device = [&store = **fleet](std::string_view token) {
    return store.AuthenticateDevice(token).ok();
  };
  // Before any thread starts, so that every thread leaves the signals to sigwait.
  const sigset_t stop_signals = BlockStopSignals();
  auto server = http::Server::Create(http::ServerOptions{.host = options.host,
                                                         .port = options.port,
                                                         .handler_threads = options.threads,
                                                         .tls = options.tls},
                                     logger.ForComponent("http"));
  if (!server.ok()) {
    return Fail(logger, server.status());
  }
  MetricsRegistry hub_registry;
  HubMetrics hub_metrics(hub_registry);
  const auto observe = [&hub_metrics](std::string api) {
    return [&hub_metrics, api](const http::Request& request, const http::Response& response,
                               double seconds) {
      hub_metrics.Observe(api, request, response, seconds);
    };
  };
  MountFleetRoutes(
      **server, **fleet,
      FleetHttpOptions{
          .admin_token = tokens->admin, .metrics = metrics->get(), .observe = observe("fleet")},
      logger.ForComponent("fleet"));
  MountMetricsRoutes(**server, **metrics, tokens->admin, logger.ForComponent("metrics"));
  hub_metrics.Mount(**server, **fleet, std::chrono::seconds(30));
  MountDashboard(**server);
  MountRegistryRoutes(
      **server, **registry,
      RegistryHttpOptions{.tokens = std::move(tokens).value(), .observe = observe("registry")},
      logger.ForComponent("registry"));
  // Unhealthy once the fleet database failed a flush: the hub takes no more
  // changes until restarted, and a supervisor should know.
  (*server)->Route("GET", "/healthz", [&store = **fleet](http::Request&, http::Response& response) {
    if (const Status health = store.Health(); !health.ok()) {
      http::SetError(response, health);
      return;
    }
    http::SetJson(response, 200, R"({"status":"ok"})");
  });
  if (const Status started = (*server)->Start(); !started.ok()) {
    return Fail(logger, started);
  }
  logger.Info(
      "hub serving the OCI registry on {}://{}:{}/v2/ and the fleet API under /api/v1/ "
      "(data in {}, anonymous pulls {}{})",
      (*server)->scheme(), options.host, (*server)->port(), options.data,
      options.anonymous_pull ? "on" : "off",
      options.tls.client_ca_file.empty() ? "" : ", client certificates required");

  CanaryJudge judge(**fleet, **metrics, CanaryJudgeOptions{}, logger.ForComponent("canary"));
  judge.Start();

  int signal = 0;
  sigwait(&stop_signals, &signal);
  logger.Info("received {}, shutting down", signal == SIGINT ? "SIGINT" : "SIGTERM");
  (*server)->Stop();
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
  app.add_option("--port", options->port, "Port (HTTPS with --tls-cert; 0: any free port)")
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
                 "Handler threads: requests run on them (a blob upload holds one while its body "
                 "arrives); idle and slow connections hold none")
      ->envname("PERCH_HUB_THREADS")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  auto* tls_cert = app.add_option("--tls-cert", options->tls.cert_file,
                                  "PEM certificate chain: serve HTTPS only (plain HTTP refused)")
                       ->envname("PERCH_HUB_TLS_CERT");
  auto* tls_key =
      app.add_option("--tls-key", options->tls.key_file, "PEM private key of --tls-cert")
          ->envname("PERCH_HUB_TLS_KEY");
  app.add_option("--tls-client-ca", options->tls.client_ca_file,
                 "PEM CA certificates: clients must present a certificate one of them signed "
                 "(mutual TLS)")
      ->envname("PERCH_HUB_TLS_CLIENT_CA")
      ->needs(tls_cert);
  tls_cert->needs(tls_key);
  tls_key->needs(tls_cert);
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
  app.add_option("--placement-grace", options->placement_grace,
                 "Seconds a device may stay silent before the models placed on it (deployments "
                 "with --replicas) are placed on other devices")
      ->envname("PERCH_HUB_PLACEMENT_GRACE")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 31))
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
