// `perch serve`: wires engine, model manager, inference service and the REST
// front end together, then waits for SIGINT or SIGTERM.
#include <fmt/format.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <thread>

#include "api/http_server.h"
#ifdef PERCH_WITH_GRPC
#include "api/grpc_server.h"
#endif
#ifdef PERCH_WITH_MQTT
#include "mqtt/mqtt_bridge.h"
#include "outbox/durable_queue.h"
#endif
#include "cli/agent_credentials.h"
#include "cli/bundle_agent.h"
#include "cli/commands.h"
#include "cli/forwarding_flags.h"
#include "cli/hub_agent.h"
#include "cli/network_local.h"
#include "cli/pulled_models.h"
#include "cli/registry_flags.h"
#include "cli/serving_engine.h"
#include "cli/trust_policy.h"
#include "core/log.h"
#include "core/metrics.h"
#include "engine/engine.h"
#include "models/inference_service.h"
#include "models/memory_budget.h"
#include "models/model_manager.h"
#include "models/scheduler.h"
#include "peers/peer_directory.h"
#include "pipeline/pipeline.h"
#include "store/blob_store.h"

namespace perch::cli {
namespace {

struct ServeOptions {
  std::string repository;
  std::vector<std::string> model_references;
  bool bundles = false;  // serve the location bundles imported into --state
  RegistryFlags registry;
  HubAgentFlags hub;
  std::string device;
  std::string log_level = "info";
  double poll_seconds = 0;
  std::string memory_limit = "auto";
  int engine_threads = 0;
  int workers = 0;
  bool check_config = false;
  std::string state = "perch-state";
  std::string management_token;
  ForwardingFlags forwarding;
  std::vector<std::string> trust_keys;
  HttpServerOptions http;
  PeerFlags peers;
#ifdef PERCH_WITH_GRPC
  GrpcServerOptions grpc;
#endif
#ifdef PERCH_WITH_MQTT
  MqttOptions mqtt;
  double mqtt_reconnect_max_seconds = 15;
  int64_t outbox_max_records = 100000;
  std::string outbox_overflow = "reject-new";
  int64_t outbox_ttl_seconds = 0;
  std::string outbox_sync = "full";
#endif
};

int Fail(const Logger& logger, const Status& status) {
  logger.Error("{}", status.message());
  return 1;
}

// Every check that needs no network, no model and no write, so that
// --check-config reports what serving would refuse.
Status CheckServeOptions(const ServeOptions& options) {
  if (options.bundles) {
    // Imported bundles say which models run; a second source would fight them.
    if (!options.hub.url.empty() || !options.repository.empty() ||
        !options.model_references.empty()) {
      return InvalidArgument(
          "--bundles serves what `perch bundle import` put into --state: drop --hub, --repo "
          "and --model");
    }
  } else if (!options.hub.url.empty()) {
    // The hub says which models run; a second source would fight it.
    if (!options.repository.empty() || !options.model_references.empty()) {
      return InvalidArgument(
          "--hub decides which models this device serves: drop --repo and --model");
    }
    PERCH_RETURN_IF_ERROR(CheckHubAgentFlags(options.hub, options.device));
  } else if (!options.model_references.empty()) {
    // One source of models at a time: mixing a hand-managed folder with
    // pulled models would leave it unclear which copy of a name is served.
    if (!options.repository.empty()) {
      return InvalidArgument(
          "--repo and --model exclude each other: --model serves the pulled models from "
          "STATE/models; drop one");
    }
    PERCH_RETURN_IF_ERROR(CheckModelReferences(options.model_references));
  } else if (options.repository.empty()) {
    return InvalidArgument(
        "give --repo DIR (a model repository) or --model REF (a model in a registry, "
        "repeatable)");
  } else if (!std::filesystem::is_directory(options.repository)) {
    return NotFound("--repo " + options.repository + " is not a directory");
  }
  PERCH_RETURN_IF_ERROR(ResolveMemoryLimit(options.memory_limit).status());
  PERCH_RETURN_IF_ERROR(CheckTls(options.http.tls));
  PERCH_RETURN_IF_ERROR(CheckPeerFlags(options.peers, !options.hub.url.empty(), options.http.host));
#ifdef PERCH_WITH_MQTT
  if (!options.mqtt.url.empty()) {
    PERCH_RETURN_IF_ERROR(MqttBridge::CheckOptions(options.mqtt));
  }
#endif
  return Status::Ok();
}

int RunServe(const ServeOptions& options) {
  const auto level = LogLevelFromString(options.log_level).value_or(LogLevel::kInfo);
  const Logger logger = Logger::ToStderr(level, "serve");
  std::filesystem::path repository = options.repository;
  if (const Status checked = CheckServeOptions(options); !checked.ok()) {
    return Fail(logger, checked);
  }
  const auto signatures = std::make_shared<SignatureRecord>();
  auto trust =
      MakeTrustCheck(options.trust_keys, options.state, logger.ForComponent("trust"), signatures);
  if (!trust.ok()) {
    return Fail(logger, trust.status());
  }
  if (options.check_config) {
    std::printf("configuration is valid\n");
    return 0;
  }
  auto management =
      ResolveManagementToken(options.management_token, options.http.host, options.state, logger);
  if (!management.ok()) {
    return Fail(logger, management.status());
  }
  HttpServerOptions http_options = options.http;
  http_options.management_token = management->token;
  // Network local: the location's other agents, asked for blobs before the
  // registry and for models this agent does not serve.
  PeerDirectory peers(PeerDirectoryOptions{
      .self_device = options.device.empty() ? DefaultDeviceName() : options.device});
  peers.SetToken(options.peers.peer_token);
  RegistryFlags registry = options.registry;
  registry.blob_sources = BlobSourcesOf(peers);
  registry.blob_sources.ca_file = registry.ca_file;
  auto static_peers =
      OpenStaticPeers(options.peers, options.registry.ca_file, peers, logger.ForComponent("peers"));
  if (!static_peers.ok()) {
    return Fail(logger, static_peers.status());
  }
  if (*static_peers) {
    (*static_peers)->PollOnce();  // before pulling: peers may hold the blobs
  }
  std::unique_ptr<BlobStore> blobs;
  if (!options.hub.url.empty() || !options.model_references.empty()) {
    auto opened = BlobStore::Open(std::filesystem::path(options.state) / "blobs");
    if (!opened.ok()) {
      return Fail(logger, opened.status());
    }
    blobs = std::move(opened).value();
  }
  http_options.peer_token = options.peers.peer_token;
  http_options.peers = &peers;
  http_options.blobs = blobs.get();
  std::unique_ptr<FleetAgent> fleet;
  std::unique_ptr<BundleAgent> bundles;
  if (options.bundles) {
    auto agent = BundleAgent::Open(options.state, std::chrono::seconds(1), options.hub.warmup_runs,
                                   logger.ForComponent("bundle"));
    if (!agent.ok()) {
      return Fail(logger, agent.status());
    }
    bundles = std::move(agent).value();
    repository = bundles->ServingRepository();
  } else if (!options.hub.url.empty()) {
    auto agent = OpenHubAgent(options.hub, registry, options.device, options.state,
                              logger.ForComponent("fleet"), HubPeersInto(peers));
    if (!agent.ok()) {
      return Fail(logger, agent.status());
    }
    fleet = std::move(agent).value();
    repository = fleet->ServingRepository();
  } else if (!options.model_references.empty()) {
    auto prepared = PrepareModels(options.model_references, options.state, registry,
                                  logger.ForComponent("store"));
    if (!prepared.ok()) {
      return Fail(logger, prepared.status());
    }
    repository = std::move(prepared).value();
  }
  const sigset_t stop_signals = BlockStopSignals();

  MetricsRegistry metrics;
  auto engine = cli::CreateServingEngine(
      OnnxEngineOptions{.intra_op_threads = options.engine_threads}, logger.ForComponent("engine"));
  if (!engine.ok()) {
    return Fail(logger, engine.status());
  }
  ModelManager models(
      ModelManagerOptions{
          .repository = repository,
          .poll_interval =
              std::chrono::milliseconds(static_cast<int64_t>(options.poll_seconds * 1000)),
          .check_version = std::move(trust).value(),
          .load_pipeline = MakePipelineLoader(metrics),
          .memory_limit_bytes = *ResolveMemoryLimit(options.memory_limit),  // checked above
      },
      **engine, metrics, logger.ForComponent("models"));
  // Models load while the servers start (both take tens of milliseconds):
  // readiness stays false until the loads are done, liveness answers meanwhile.
  Status loaded = Status::Ok();
  std::jthread loading([&models, &loaded] { loaded = models.Start(); });
  Scheduler scheduler(SchedulerOptions{.workers = options.workers});
  scheduler.Start();
  const InferenceService inference(models, scheduler);
  auto http =
      HttpServer::Create(http_options, inference, models, metrics, logger.ForComponent("http"));
  if (!http.ok()) {
    return Fail(logger, http.status());
  }
#ifdef PERCH_WITH_GRPC
  GrpcServerOptions grpc_options = options.grpc;
  grpc_options.peer_token = options.peers.peer_token;
  grpc_options.peers = &peers;
  auto grpc = GrpcServer::Create(grpc_options, inference, models, logger.ForComponent("grpc"));
  if (!grpc.ok()) {
    return Fail(logger, grpc.status());
  }
#endif
  if (const Status started = (*http)->Start(); !started.ok()) {
    return Fail(logger, started);
  }
#ifdef PERCH_WITH_GRPC
  if (const Status started = (*grpc)->Start(); !started.ok()) {
    (*http)->Stop();
    return Fail(logger, started);
  }
#endif
  {
    int grpc_port = 0;
#ifdef PERCH_WITH_GRPC
    grpc_port = (*grpc)->port();
#endif
    peers.SetSelf(
        AdvertisedUrl(options.peers, (*http)->scheme(), options.http.host, (*http)->port()),
        AdvertisedGrpc(options.peers, options.http.host, grpc_port));
    if (peers.Self().url.empty() && !options.hub.url.empty()) {
      logger.Warn(
          "--host {} listens on every address: give --advertise-url so that the other "
          "agents of the location can reach this one",
          options.http.host);
    }
  }
  if (*static_peers) {
    (*static_peers)->Start();
  }
  loading.join();
  if (!loaded.ok()) {
    (*http)->Stop();
    return Fail(logger, loaded);
  }
#ifdef PERCH_WITH_MQTT
  // The queues and the bridge live here, so that they outlive what uses them.
  std::unique_ptr<DurableQueue> inbox;
  std::unique_ptr<DurableQueue> outbox;
  std::unique_ptr<MqttBridge> mqtt;
  if (!options.mqtt.url.empty()) {
    DurableQueueOptions queue{
        .path = std::filesystem::path(options.state) / "outbox.db",
        .name = "outbox",
        .max_records = options.outbox_max_records,
        .overflow =
            OverflowPolicyFromString(options.outbox_overflow).value_or(OverflowPolicy::kRejectNew),
        .ttl = std::chrono::seconds(options.outbox_ttl_seconds),
        .sync = SyncModeFromString(options.outbox_sync).value_or(SyncMode::kFull),
    };
    auto opened_outbox = DurableQueue::Open(queue, metrics);
    queue.path = std::filesystem::path(options.state) / "mqtt-inbox.db";
    queue.name = "mqtt-inbox";
    // Accepted messages are never dropped for age, and the outbox's cap does
    // not apply: the inbox only ever holds what is being worked on.
    queue.max_records = int64_t{1} << 40;
    queue.overflow = OverflowPolicy::kRejectNew;
    queue.ttl = std::chrono::seconds(0);
    auto opened_inbox = DurableQueue::Open(queue, metrics);
    if (!opened_outbox.ok() || !opened_inbox.ok()) {
      return Fail(logger, opened_outbox.ok() ? opened_inbox.status() : opened_outbox.status());
    }
    outbox = std::move(opened_outbox).value();
    inbox = std::move(opened_inbox).value();
    MqttOptions mqtt_options = options.mqtt;
    mqtt_options.server_version = Version();
    mqtt_options.reconnect_max =
        std::chrono::milliseconds(static_cast<int64_t>(options.mqtt_reconnect_max_seconds * 1000));
    auto bridge = MqttBridge::Create(mqtt_options, inference, models, *inbox, *outbox, metrics,
                                     logger.ForComponent("mqtt"));
    if (!bridge.ok()) {
      return Fail(logger, bridge.status());
    }
    mqtt = std::move(bridge).value();
    if (const Status started = mqtt->Start(); !started.ok()) {
      return Fail(logger, started);
    }
  }
#endif
  if (bundles) {
    bundles->Start(models);
  }
  if (fleet) {
    fleet->Start(models, [&](Heartbeat& heartbeat) {
      heartbeat.bundle_generation = ImportedBundleGeneration(options.state);
      FillPeerHeartbeat(peers, blobs.get(), heartbeat);
      for (ModelReport& model : heartbeat.models) {
        if (model.signature.state.empty()) {
          model.signature = signatures->Find(model.digest).value_or(SignatureState{});
        }
      }
#ifdef PERCH_WITH_MQTT
      if (outbox) {
        heartbeat.outbox_depth = outbox->Size();
      }
#endif
    });
  }
  logger.Info("ready: try curl {}://{}:{}/v2/repository/index -X POST{}", (*http)->scheme(),
              options.http.host, (*http)->port(),
              management->file.empty() ? std::string()
                                       : fmt::format(" -H \"Authorization: Bearer $(cat {})\"",
                                                     management->file.string()));

  int signal = 0;
  sigwait(&stop_signals, &signal);
  logger.Info("received {}, shutting down", signal == SIGINT ? "SIGINT" : "SIGTERM");
  // Staged: stop accepting and finish the requests in flight, then the
  // workers (which run what is still queued), then the repository poller.
  if (fleet) {
    fleet->Stop();
  }
  if (*static_peers) {
    (*static_peers)->Stop();
  }
  if (bundles) {
    bundles->Stop();
  }
#ifdef PERCH_WITH_MQTT
  if (mqtt) {
    mqtt->Stop();
  }
#endif
  (*http)->Stop();
#ifdef PERCH_WITH_GRPC
  (*grpc)->Stop();
#endif
  scheduler.Stop();
  models.Stop();
  return 0;
}

}  // namespace

CommandRunner AddServeCommand(CLI::App& app) {
  auto options = std::make_shared<ServeOptions>();
  app.add_option("--repo", options->repository,
                 "Model repository: REPO/<model>/<version>/model.onnx")
      ->envname("PERCH_REPO");
  app.add_flag("--bundles", options->bundles,
               "Serve the location bundles `perch bundle import` puts into --state (a site with "
               "no hub), switching to each newer generation as it arrives")
      ->envname("PERCH_BUNDLES");
  app.add_option("--model", options->model_references,
                 "A model in an OCI registry, HOST[:PORT]/REPO[:TAG][@sha256:...] (repeatable): "
                 "pulled into --state and served from there, instead of --repo")
      ->envname("PERCH_MODELS")
      ->delimiter(',');
  AddRegistryFlags(app, options->registry);
  AddHubAgentFlags(app, options->hub);
  app.add_option("--device", options->device,
                 "This device's name, for the hub, MQTT and the location's peers (default: the "
                 "host name)")
      ->envname("PERCH_DEVICE");
  AddPeerFlags(app, options->peers);
  app.add_option("--host", options->http.host, "Address to listen on")
      ->envname("PERCH_HOST")
      ->capture_default_str();
  app.add_option("--http-port", options->http.port, "REST port (0: any free port)")
      ->envname("PERCH_HTTP_PORT")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  app.add_option("--tls-cert", options->http.tls.cert_file,
                 "PEM certificate (chain): REST and gRPC serve over TLS only")
      ->envname("PERCH_TLS_CERT");
  app.add_option("--tls-key", options->http.tls.key_file, "PEM private key of --tls-cert")
      ->envname("PERCH_TLS_KEY");
  app.add_option("--tls-client-ca", options->http.tls.client_ca_file,
                 "PEM CA: REST and gRPC clients must present a certificate it signed (mutual TLS)")
      ->envname("PERCH_TLS_CLIENT_CA");
  app.add_option("--management-token", options->management_token,
                 "Token the repository endpoints (index, load, unload) need. Default: none on "
                 "loopback; beyond it, one generated into STATE/management-token")
      ->envname("PERCH_MANAGEMENT_TOKEN");
  app.add_option("--api-token", options->http.api_token,
                 "Token that inference and model metadata/readiness need, on REST and gRPC "
                 "(default: none; health and /metrics stay open)")
      ->envname("PERCH_API_TOKEN");
#ifdef PERCH_WITH_GRPC
  app.add_option("--grpc-port", options->grpc.port, "gRPC port (0: any free port)")
      ->envname("PERCH_GRPC_PORT")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  app.add_option("--grpc-max-message-bytes", options->grpc.max_message_bytes,
                 "Largest gRPC message received or sent")
      ->envname("PERCH_GRPC_MAX_MESSAGE_BYTES")
      ->check(CLI::Range(size_t{1024}, (size_t{1} << 31) - 1))
      ->capture_default_str();
#endif
  app.add_option("--trust-key", options->trust_keys,
                 "Serve only models signed by this ECDSA public key (PEM, repeatable; also "
                 "every STATE/trust/*.pem): an unsigned or tampered version never becomes "
                 "ready, see docs/signing.md")
      ->envname("PERCH_TRUST_KEYS")
      ->delimiter(',');
  app.add_option("--state", options->state,
                 "Folder for what must survive a restart (pulled models and their blobs, the "
                 "outbox, the MQTT inbox)")
      ->envname("PERCH_STATE")
      ->capture_default_str();
#ifdef PERCH_WITH_MQTT
  app.add_option("--mqtt", options->mqtt.url,
                 "MQTT broker, mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
      ->envname("PERCH_MQTT");
  app.add_option("--mqtt-username", options->mqtt.username, "MQTT user name")
      ->envname("PERCH_MQTT_USERNAME");
  app.add_option("--mqtt-password", options->mqtt.password,
                 "MQTT password (prefer the environment variable: flags show in ps)")
      ->envname("PERCH_MQTT_PASSWORD");
  app.add_option("--mqtt-ca-file", options->mqtt.ca_file, "mqtts: the CA certificate to trust")
      ->envname("PERCH_MQTT_CA_FILE")
      ->check(CLI::ExistingFile);
  app.add_option("--mqtt-prefix", options->mqtt.prefix, "First level of every perch topic")
      ->envname("PERCH_MQTT_PREFIX")
      ->capture_default_str();
  app.add_option("--location", options->mqtt.location, "This device's edge location")
      ->envname("PERCH_LOCATION")
      ->capture_default_str();
  app.add_option("--mqtt-keepalive", options->mqtt.keepalive_seconds,
                 "Seconds of silence after which the agent pings the broker; a link that "
                 "stays silent 1.5 times as long is taken for dead and dialled again")
      ->envname("PERCH_MQTT_KEEPALIVE")
      ->check(CLI::Range(5, 65535))
      ->capture_default_str();
  app.add_option("--mqtt-reconnect-max", options->mqtt_reconnect_max_seconds,
                 "Longest wait in seconds between attempts to reach the broker (the waits "
                 "double from 0.25 s up to this, with jitter)")
      ->envname("PERCH_MQTT_RECONNECT_MAX")
      ->check(CLI::Range(0.25, 3600.0))
      ->capture_default_str();

  app.add_option("--outbox-max-records", options->outbox_max_records,
                 "Records the outbox holds while the broker is out of reach")
      ->envname("PERCH_OUTBOX_MAX_RECORDS")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 40))
      ->capture_default_str();
  app.add_option("--outbox-overflow", options->outbox_overflow,
                 "When the outbox is full: reject-new or drop-oldest")
      ->envname("PERCH_OUTBOX_OVERFLOW")
      ->check(CLI::IsMember({"reject-new", "drop-oldest"}))
      ->capture_default_str();
  app.add_option("--outbox-ttl", options->outbox_ttl_seconds,
                 "Seconds a record may wait before it is dropped undelivered (0: forever)")
      ->envname("PERCH_OUTBOX_TTL")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40))
      ->capture_default_str();
  app.add_option("--outbox-sync", options->outbox_sync,
                 "full: every record acknowledged survives a power loss (a disk flush per "
                 "transaction); normal: faster, survives the agent being killed but a power "
                 "loss may undo the last records (docs/durability.md)")
      ->envname("PERCH_OUTBOX_SYNC")
      ->check(CLI::IsMember({"normal", "full"}))
      ->capture_default_str();
#endif
  app.add_option("--poll", options->poll_seconds,
                 "Rescan the repository every SECONDS for added, changed and removed versions "
                 "(0: never)")
      ->envname("PERCH_POLL")
      ->check(CLI::Range(0.0, 86400.0))
      ->capture_default_str();
  app.add_option("--memory-limit", options->memory_limit,
                 "Memory the agent may keep resident, e.g. 512M or 2G: models load while they "
                 "fit, the rest on first use, the least recently used idle ones unload to make "
                 "room (auto: 90% of the cgroup limit or of the available memory; 0: no limit)")
      ->envname("PERCH_MEMORY_LIMIT")
      ->capture_default_str();
  app.add_option("--max-body-bytes", options->http.max_body_bytes,
                 "Largest request body accepted, after decompression")
      ->envname("PERCH_MAX_BODY_BYTES")
      ->check(CLI::Range(size_t{1024}, size_t{1} << 34))
      ->capture_default_str();
  app.add_option("--max-json-depth", options->http.max_json_depth, "Deepest JSON nesting accepted")
      ->envname("PERCH_MAX_JSON_DEPTH")
      ->check(CLI::Range(size_t{4}, size_t{1024}))
      ->capture_default_str();
  app.add_option("--http-threads", options->http.threads,
                 "REST handler threads: requests handled at once (connections are not limited "
                 "by it)")
      ->envname("PERCH_HTTP_THREADS")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  app.add_option("--threads", options->engine_threads,
                 "Threads of the inference pool shared by all models (0: one per core)")
      ->envname("PERCH_THREADS")
      ->check(CLI::Range(0, 1024))
      ->capture_default_str();
  app.add_option("--workers", options->workers,
                 "Inference workers shared by all models (0: one per core)")
      ->envname("PERCH_WORKERS")
      ->check(CLI::Range(0, 1024))
      ->capture_default_str();
  app.add_option("--log-level", options->log_level, "debug, info, warn or error")
      ->envname("PERCH_LOG_LEVEL")
      ->check(CLI::IsMember({"debug", "info", "warn", "error"}))
      ->capture_default_str();
  AddForwardingFlags(app, options->forwarding);
  app.add_flag("--check-config", options->check_config,
               "Check the options and exit without serving");
  return [options] {
    options->http.server_version = Version();
    options->http.forwarding = MakeForwardingOptions(
        options->forwarding, options->device.empty() ? DefaultDeviceName() : options->device,
        options->registry.ca_file);
#ifdef PERCH_WITH_GRPC
    options->grpc.server_version = Version();
    options->grpc.host = options->http.host;
    options->grpc.tls = options->http.tls;
    options->grpc.api_token = options->http.api_token;
    options->grpc.forwarding = options->http.forwarding;
#endif
#ifdef PERCH_WITH_MQTT
    options->mqtt.device = options->device.empty() ? DefaultDeviceName() : options->device;
#endif
    return RunServe(*options);
  };
}

}  // namespace perch::cli
