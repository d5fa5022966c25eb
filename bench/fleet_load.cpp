// Load generator for the fleet scale benchmark (bench/fleet/run.py): many
// simulated devices heartbeating against one `perch hub`.
//
// Phase 1 (setup, not timed as load): creates --locations locations with the
// admin token, enrols --devices devices through POST /api/v1/enrol with each
// location's enrolment token (labels, architecture, addresses as an agent
// sends them), creates deployments so that every device has 2-3 models to
// serve (one for all, one per location, one for arm64 devices whose second
// revision is a canary still in progress), and fetches each device's desired
// state once, as an agent does after enrolling.
//
// Phase 2 (load): every device sends a heartbeat every --interval seconds and
// a conditional GET of its desired state (If-None-Match with the last ETag)
// every --poll-interval seconds, both divided by --compression, each device
// at its own random phase. Pacing is open loop: every request has a scheduled
// send time and its latency is measured from that time, so a stalled server
// is charged for the requests it delayed (no coordinated omission). Every
// request opens its own connection (the worst case) unless --keep-alive
// (what perch's HubClient does: one kept-alive http::Client per agent). `--target healthz` sends
// GET /healthz on the same schedule instead and skips phase 1: the bare HTTP cost.
//
//   bench_fleet_load --url http://127.0.0.1:PORT [--admin-token T]
//       [--devices 10000] [--locations 10] [--interval 10] [--poll-interval 5]
//       [--compression 1] [--warmup 5] [--duration 30] [--threads 64]
//       [--keep-alive] [--target fleet|healthz] [--seed 42]
//
// The admin token defaults to $PERCH_HUB_ADMIN_TOKEN. Prints one JSON line
// {"event":"measure_start"} when the measured window opens and one when it
// closes (the runner samples the hub's CPU between them), then the results
// as one JSON object on the last line.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "http/client.h"

namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

struct Options {
  std::string host = "127.0.0.1";
  int port = 0;
  std::string admin_token;
  int devices = 10000;
  int locations = 10;
  double interval = 10;      // seconds between a device's heartbeats (agents: 10)
  double poll_interval = 5;  // seconds between a device's desired-state polls (agents: 5)
  double compression = 1;    // both intervals are divided by this
  double warmup = 5;
  double duration = 30;
  int threads = 64;
  int setup_threads = 8;
  bool keep_alive = false;
  bool healthz = false;
  uint64_t seed = 42;
};

[[noreturn]] void Usage(const std::string& error) {
  std::fprintf(stderr,
               "error: %s\nusage: bench_fleet_load --url http://HOST:PORT [--admin-token T]\n"
               "  [--devices N] [--locations N] [--interval S] [--poll-interval S]\n"
               "  [--compression X] [--warmup S] [--duration S] [--threads N]\n"
               "  [--setup-threads N] [--keep-alive] [--target fleet|healthz] [--seed N]\n",
               error.c_str());
  std::exit(2);
}

Options ParseArgs(int argc, char** argv) {
  Options options;
  if (const char* token = std::getenv("PERCH_HUB_ADMIN_TOKEN")) {
    options.admin_token = token;
  }
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        Usage(arg + " needs a value");
      }
      return argv[++i];
    };
    if (arg == "--url") {
      const std::string url = value();
      const std::string scheme = "http://";
      const size_t colon = url.rfind(':');
      if (!url.starts_with(scheme) || colon < scheme.size()) {
        Usage("--url must be http://HOST:PORT");
      }
      options.host = url.substr(scheme.size(), colon - scheme.size());
      options.port = std::atoi(url.c_str() + colon + 1);
    } else if (arg == "--admin-token") {
      options.admin_token = value();
    } else if (arg == "--devices") {
      options.devices = std::atoi(value().c_str());
    } else if (arg == "--locations") {
      options.locations = std::atoi(value().c_str());
    } else if (arg == "--interval") {
      options.interval = std::atof(value().c_str());
    } else if (arg == "--poll-interval") {
      options.poll_interval = std::atof(value().c_str());
    } else if (arg == "--compression") {
      options.compression = std::atof(value().c_str());
    } else if (arg == "--warmup") {
      options.warmup = std::atof(value().c_str());
    } else if (arg == "--duration") {
      options.duration = std::atof(value().c_str());
    } else if (arg == "--threads") {
      options.threads = std::atoi(value().c_str());
    } else if (arg == "--setup-threads") {
      options.setup_threads = std::atoi(value().c_str());
    } else if (arg == "--keep-alive") {
      options.keep_alive = true;
    } else if (arg == "--target") {
      const std::string target = value();
      if (target != "fleet" && target != "healthz") {
        Usage("--target is fleet or healthz");
      }
      options.healthz = target == "healthz";
    } else if (arg == "--seed") {
      options.seed = std::strtoull(value().c_str(), nullptr, 10);
    } else {
      Usage("unknown argument " + arg);
    }
  }
  if (options.port <= 0) {
    Usage("--url http://HOST:PORT is required");
  }
  if (!options.healthz && options.admin_token.empty()) {
    Usage("the admin token is needed: --admin-token or PERCH_HUB_ADMIN_TOKEN");
  }
  if (options.devices < 1 || options.locations < 1 || options.locations > options.devices ||
      options.interval <= 0 || options.poll_interval <= 0 || options.compression <= 0 ||
      options.duration <= 0 || options.warmup < 0 || options.threads < 1 ||
      options.setup_threads < 1) {
    Usage("counts and times must be positive (and locations <= devices)");
  }
  return options;
}

void Emit(const json& line) {
  std::printf("%s\n", line.dump().c_str());
  std::fflush(stdout);
}

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "bench_fleet_load: %s\n", message.c_str());
  std::exit(1);
}

struct SimDevice {
  std::string name;
  std::string token;
  std::string location;
  bool arm64 = false;
  std::mutex mutex;  // guards etag and models: a poll and a heartbeat may overlap
  std::string etag;
  std::vector<std::string> references;
};

// One HTTP client per call (a new connection, as HubClient does by default),
// or one kept per thread with --keep-alive.
class Connector {
 public:
  explicit Connector(const Options& options) : options_(options) {}

  perch::Result<perch::http::ClientResponse> Send(const std::string& method,
                                                  const std::string& path,
                                                  const perch::http::Headers& headers,
                                                  const std::string& body = "") {
    std::unique_ptr<perch::http::Client> fresh;
    perch::http::Client* client = nullptr;
    if (options_.keep_alive) {
      if (!kept_) {
        kept_ = MakeClient();
      }
      client = kept_.get();
    } else {
      fresh = MakeClient();
      client = fresh.get();
    }
    perch::http::ClientRequest request;
    request.method = method;
    request.url = "http://" + options_.host + ":" + std::to_string(options_.port) + path;
    request.headers = headers;
    if (method != "GET") {
      request.headers.Set("Content-Type", "application/json");
      request.body = body;
    }
    return client->Send(request);
  }

 private:
  std::unique_ptr<perch::http::Client> MakeClient() const {
    auto client = perch::http::Client::Create(perch::http::ClientOptions{
        .connect_timeout = std::chrono::seconds(10),
        .read_timeout = std::chrono::seconds(30),
    });
    if (!client.ok()) {
      Die(client.status().message());
    }
    return std::move(client).value();
  }

  const Options& options_;
  std::unique_ptr<perch::http::Client> kept_;
};

perch::http::Headers Bearer(const std::string& token) {
  perch::http::Headers headers;
  headers.Set("Authorization", "Bearer " + token);
  return headers;
}

json Expect(const perch::Result<perch::http::ClientResponse>& result, int status,
            const std::string& what) {
  if (!result.ok()) {
    Die(what + ": " + result.status().message());
  }
  if (result->status != status) {
    Die(what + ": HTTP " + std::to_string(result->status) + " " + result->body.substr(0, 300));
  }
  return result->body.empty() ? json() : json::parse(result->body);
}

std::string LocationName(int i) {
  char name[32];
  std::snprintf(name, sizeof(name), "site-%03d", i);
  return name;
}

// Runs fn(i) for i in [0, count) on `threads` threads, each with its own
// Connector.
template <typename Fn>
void ParallelFor(const Options& options, int count, int threads, Fn fn) {
  std::atomic<int> next{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      Connector connector(options);
      for (int i = next++; i < count; i = next++) {
        fn(connector, i);
      }
    });
  }
  for (std::thread& thread : pool) {
    thread.join();
  }
}

void UpdateDesired(SimDevice& device, const json& state) {
  std::lock_guard lock(device.mutex);
  device.etag = state.at("etag").get<std::string>();
  device.references.clear();
  for (const json& model : state.at("models")) {
    device.references.push_back(model.at("reference").get<std::string>());
  }
}

// Phase 1. Returns what it made, for the report.
json Setup(const Options& options, std::vector<std::unique_ptr<SimDevice>>& devices) {
  const auto start = Clock::now();
  Connector admin(options);
  const perch::http::Headers admin_auth = Bearer(options.admin_token);
  std::vector<std::string> enrolment_tokens;
  for (int i = 0; i < options.locations; ++i) {
    const json spec = {{"name", LocationName(i)},
                       {"description", "benchmark site " + std::to_string(i)},
                       {"labels", {{"region", i % 2 == 0 ? "north" : "south"}}}};
    const json created = Expect(admin.Send("POST", "/api/v1/locations", admin_auth, spec.dump()),
                                201, "create location " + LocationName(i));
    enrolment_tokens.push_back(created.at("enrolment_token").get<std::string>());
  }

  devices.resize(static_cast<size_t>(options.devices));
  for (int i = 0; i < options.devices; ++i) {
    auto device = std::make_unique<SimDevice>();
    char name[32];
    std::snprintf(name, sizeof(name), "dev-%05d", i);
    device->name = name;
    device->location = LocationName(i % options.locations);
    device->arm64 = i % 3 != 0;
    devices[static_cast<size_t>(i)] = std::move(device);
  }
  const auto enrol_start = Clock::now();
  ParallelFor(options, options.devices, options.setup_threads, [&](Connector& connector, int i) {
    SimDevice& device = *devices[static_cast<size_t>(i)];
    const json spec = {
        {"name", device.name},
        {"labels", {{"camera", i % 2 == 0 ? "v2" : "v3"}, {"ring", std::to_string(i % 4)}}},
        {"architecture", device.arm64 ? "arm64" : "amd64"},
        {"perch_version", "0.9.0"},
        {"addresses",
         {"10." + std::to_string(i / 65536 % 256) + "." + std::to_string(i / 256 % 256) + "." +
          std::to_string(i % 256)}}};
    const json enrolled =
        Expect(connector.Send("POST", "/api/v1/enrol",
                              Bearer(enrolment_tokens[static_cast<size_t>(i % options.locations)]),
                              spec.dump()),
               201, "enrol " + device.name);
    device.token = enrolled.at("token").get<std::string>();
  });
  const double enrol_seconds = std::chrono::duration<double>(Clock::now() - enrol_start).count();

  // Deployments: a detector everywhere, a keyword spotter per location, and
  // a classifier on arm64 whose second revision is a canary to 10% that stays
  // in progress for the whole run (the hub decides per device who has it).
  const auto deploy = [&](const std::string& method, const std::string& path, const json& spec) {
    Expect(admin.Send(method, path, admin_auth, spec.dump()), method == "POST" ? 201 : 200,
           method + " " + path);
  };
  int deployments = 0;
  deploy("POST", "/api/v1/deployments",
         {{"name", "detector"},
          {"reference", "hub.local/models/detector:3"},
          {"selector", json::object()},
          {"rollout", {{"strategy", "all-at-once"}}}});
  ++deployments;
  for (int i = 0; i < options.locations; ++i) {
    deploy("POST", "/api/v1/deployments",
           {{"name", "keywords-" + LocationName(i)},
            {"reference", "hub.local/models/keywords-" + LocationName(i) + ":1"},
            {"selector", {{"location", LocationName(i)}}},
            {"rollout", {{"strategy", "all-at-once"}}}});
    ++deployments;
  }
  const json classifier_selector = {{"architecture", "arm64"}};
  deploy("POST", "/api/v1/deployments",
         {{"name", "classifier"},
          {"reference", "hub.local/models/classifier:1"},
          {"selector", classifier_selector},
          {"rollout", {{"strategy", "all-at-once"}}}});
  deploy("PUT", "/api/v1/deployments/classifier",
         {{"name", "classifier"},
          {"reference", "hub.local/models/classifier:2"},
          {"selector", classifier_selector},
          {"rollout",
           {{"strategy", "canary"}, {"canary_percent", 10}, {"canary_healthy_seconds", 86400}}}});
  ++deployments;

  // Each device learns its desired state once, as an agent does on start.
  ParallelFor(options, options.devices, options.setup_threads, [&](Connector& connector, int i) {
    SimDevice& device = *devices[static_cast<size_t>(i)];
    const json state =
        Expect(connector.Send("GET", "/api/v1/devices/" + device.name + "/desired-state",
                              Bearer(device.token)),
               200, "desired state of " + device.name);
    UpdateDesired(device, state);
  });
  size_t models = 0;
  for (const auto& device : devices) {
    models += device->references.size();
  }
  return {{"locations", options.locations},
          {"devices", options.devices},
          {"deployments", deployments},
          {"models_per_device", static_cast<double>(models) / options.devices},
          {"enrol_seconds", enrol_seconds},
          {"enrolments_per_second", options.devices / enrol_seconds},
          {"setup_seconds", std::chrono::duration<double>(Clock::now() - start).count()}};
}

std::string HeartbeatBody(SimDevice& device, std::mt19937_64& rng) {
  json models = json::array();
  std::string etag;
  {
    std::lock_guard lock(device.mutex);
    etag = device.etag;
    for (const std::string& reference : device.references) {
      const size_t slash = reference.rfind('/');
      const size_t colon = reference.rfind(':');
      models.push_back({{"name", reference.substr(slash + 1, colon - slash - 1)},
                        {"version", 1},
                        {"reference", reference},
                        {"digest", "sha256:" + std::string(64, 'a')},
                        {"state", "READY"},
                        {"error", ""}});
    }
  }
  std::uniform_real_distribution<double> load(0.0, 2.0);
  return json{{"models", models},  {"errors", json::array()},         {"load", load(rng)},
              {"outbox_depth", 0}, {"last_inference_at", 1764000000}, {"applied_etag", etag}}
      .dump();
}

struct Event {
  double at = 0;  // seconds after the start of phase 2
  int device = 0;
  bool heartbeat = false;
};

std::vector<Event> Schedule(const Options& options) {
  std::mt19937_64 rng(options.seed);
  // One more second after the measured window, so that the load is steady
  // until the window closes.
  const double end = options.warmup + options.duration + 1.0;
  std::vector<Event> events;
  for (const bool heartbeat : {true, false}) {
    const double period =
        (heartbeat ? options.interval : options.poll_interval) / options.compression;
    std::uniform_real_distribution<double> phase(0.0, period);
    for (int d = 0; d < options.devices; ++d) {
      for (double at = phase(rng); at < end; at += period) {
        events.push_back(Event{.at = at, .device = d, .heartbeat = heartbeat});
      }
    }
  }
  std::sort(events.begin(), events.end(),
            [](const Event& a, const Event& b) { return a.at < b.at; });
  return events;
}

struct Samples {
  std::vector<double> latency_ms;  // from the scheduled send time
  std::vector<double> service_ms;  // from the actual send time
  std::vector<double> lag_ms;      // actual send - scheduled (client behind)
  int64_t errors = 0;
  int64_t not_modified = 0;
  int64_t changed = 0;
  std::vector<std::string> first_errors;

  void Merge(Samples& other) {
    latency_ms.insert(latency_ms.end(), other.latency_ms.begin(), other.latency_ms.end());
    service_ms.insert(service_ms.end(), other.service_ms.begin(), other.service_ms.end());
    lag_ms.insert(lag_ms.end(), other.lag_ms.begin(), other.lag_ms.end());
    errors += other.errors;
    not_modified += other.not_modified;
    changed += other.changed;
    for (std::string& error : other.first_errors) {
      if (first_errors.size() < 5) {
        first_errors.push_back(std::move(error));
      }
    }
  }
};

double Percentile(std::vector<double>& sorted, double p) {
  if (sorted.empty()) {
    return 0;
  }
  const size_t index = std::min(
      sorted.size() - 1, static_cast<size_t>(p / 100.0 * static_cast<double>(sorted.size())));
  return sorted[index];
}

json Summary(Samples& samples, double seconds) {
  std::sort(samples.latency_ms.begin(), samples.latency_ms.end());
  std::sort(samples.service_ms.begin(), samples.service_ms.end());
  std::sort(samples.lag_ms.begin(), samples.lag_ms.end());
  double sum = 0;
  for (const double v : samples.latency_ms) {
    sum += v;
  }
  const auto count = static_cast<double>(samples.latency_ms.size());
  return {{"count", samples.latency_ms.size()},
          {"errors", samples.errors},
          {"rate", count / seconds},
          {"p50_ms", Percentile(samples.latency_ms, 50)},
          {"p90_ms", Percentile(samples.latency_ms, 90)},
          {"p99_ms", Percentile(samples.latency_ms, 99)},
          {"p999_ms", Percentile(samples.latency_ms, 99.9)},
          {"max_ms", samples.latency_ms.empty() ? 0.0 : samples.latency_ms.back()},
          {"mean_ms", count > 0 ? sum / count : 0.0},
          {"service_p99_ms", Percentile(samples.service_ms, 99)},
          {"lag_p99_ms", Percentile(samples.lag_ms, 99)},
          {"lag_max_ms", samples.lag_ms.empty() ? 0.0 : samples.lag_ms.back()},
          {"not_modified", samples.not_modified},
          {"changed", samples.changed},
          {"first_errors", samples.first_errors}};
}

// Phase 2.
json Load(const Options& options, std::vector<std::unique_ptr<SimDevice>>& devices) {
  const std::vector<Event> events = Schedule(options);
  std::atomic<size_t> next{0};
  std::atomic<bool> opened{false};
  std::atomic<bool> closed{false};
  std::mutex merge_mutex;
  Samples heartbeats;
  Samples polls;
  const auto start = Clock::now() + std::chrono::milliseconds(200);
  const auto measure_from = start + std::chrono::duration_cast<Clock::duration>(
                                        std::chrono::duration<double>(options.warmup));
  const auto measure_to = measure_from + std::chrono::duration_cast<Clock::duration>(
                                             std::chrono::duration<double>(options.duration));

  const auto worker = [&](int index) {
    Connector connector(options);
    std::mt19937_64 rng(options.seed + 1000 + static_cast<uint64_t>(index));
    Samples my_heartbeats;
    Samples my_polls;
    for (size_t i = next++; i < events.size(); i = next++) {
      const Event& event = events[i];
      const auto scheduled = start + std::chrono::duration_cast<Clock::duration>(
                                         std::chrono::duration<double>(event.at));
      std::this_thread::sleep_until(scheduled);
      const bool measured = scheduled >= measure_from && scheduled < measure_to;
      if (measured && !opened.exchange(true)) {
        Emit({{"event", "measure_start"}});
      }
      if (!measured && scheduled >= measure_to && !closed.exchange(true)) {
        Emit({{"event", "measure_end"}});
      }
      SimDevice& device = *devices[static_cast<size_t>(event.device)];
      Samples& samples = event.heartbeat ? my_heartbeats : my_polls;
      const auto sent = Clock::now();
      std::string error;
      if (options.healthz) {
        const auto result = connector.Send("GET", "/healthz", {});
        if (!result.ok()) {
          error = result.status().message();
        } else if (result->status != 200) {
          error = "HTTP " + std::to_string(result->status);
        }
      } else if (event.heartbeat) {
        const auto result = connector.Send("POST", "/api/v1/devices/" + device.name + "/heartbeat",
                                           Bearer(device.token), HeartbeatBody(device, rng));
        if (!result.ok()) {
          error = result.status().message();
        } else if (result->status != 204) {
          error = "HTTP " + std::to_string(result->status) + " " + result->body.substr(0, 200);
        }
      } else {
        perch::http::Headers headers = Bearer(device.token);
        {
          std::lock_guard lock(device.mutex);
          headers.Set("If-None-Match", "\"" + device.etag + "\"");
        }
        const auto result =
            connector.Send("GET", "/api/v1/devices/" + device.name + "/desired-state", headers);
        if (!result.ok()) {
          error = result.status().message();
        } else if (result->status == 304) {
          ++samples.not_modified;
        } else if (result->status == 200) {
          ++samples.changed;
          UpdateDesired(device, json::parse(result->body));
        } else {
          error = "HTTP " + std::to_string(result->status) + " " + result->body.substr(0, 200);
        }
      }
      const auto done = Clock::now();
      if (!measured) {
        continue;
      }
      if (!error.empty()) {
        ++samples.errors;
        if (samples.first_errors.size() < 5) {
          samples.first_errors.push_back(error);
        }
        continue;
      }
      samples.latency_ms.push_back(
          std::chrono::duration<double, std::milli>(done - scheduled).count());
      samples.service_ms.push_back(std::chrono::duration<double, std::milli>(done - sent).count());
      samples.lag_ms.push_back(std::chrono::duration<double, std::milli>(sent - scheduled).count());
    }
    std::lock_guard lock(merge_mutex);
    heartbeats.Merge(my_heartbeats);
    polls.Merge(my_polls);
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < options.threads; ++t) {
    pool.emplace_back(worker, t);
  }
  for (std::thread& thread : pool) {
    thread.join();
  }
  if (!closed.exchange(true)) {
    Emit({{"event", "measure_end"}});
  }
  const double seconds = options.duration;
  json out = {{"heartbeat", Summary(heartbeats, seconds)}, {"poll", Summary(polls, seconds)}};
  out["target_rate"] = {{"heartbeat", options.devices * options.compression / options.interval},
                        {"poll", options.devices * options.compression / options.poll_interval}};
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  const Options options = ParseArgs(argc, argv);
  std::vector<std::unique_ptr<SimDevice>> devices;
  json setup;
  if (options.healthz) {
    for (int i = 0; i < options.devices; ++i) {
      devices.push_back(std::make_unique<SimDevice>());
    }
  } else {
    setup = Setup(options, devices);
  }
  Emit({{"event", "setup_done"}, {"setup", setup}});
  json result = Load(options, devices);
  result["setup"] = setup;
  result["options"] = {{"target", options.healthz ? "healthz" : "fleet"},
                       {"devices", options.devices},
                       {"locations", options.locations},
                       {"interval", options.interval},
                       {"poll_interval", options.poll_interval},
                       {"compression", options.compression},
                       {"warmup", options.warmup},
                       {"duration", options.duration},
                       {"threads", options.threads},
                       {"keep_alive", options.keep_alive}};
  Emit(result);
  return 0;
}
