#include "fleet/fleet_http.h"

#include <charconv>
#include <chrono>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <system_error>

#include "fleet/fleet_json.h"
#include "fleet/metrics_store.h"
#include "http/credentials.h"
#include "http/errors.h"

namespace perch {
namespace {

using nlohmann::json;

void SendJson(http::Response& response, int status, std::string body) {
  http::SetJson(response, status, std::move(body));
}

void SendError(http::Response& response, const Status& status) {
  if (status.code() == StatusCode::kUnauthenticated) {
    response.headers.Set("WWW-Authenticate", http::BearerChallenge("perch-hub"));
  }
  http::SetError(response, status);
}

// The token of the request's Authorization header (Bearer, or Basic with
// the token as password); Unauthenticated, saying what to send, without one.
Result<std::string> TokenOf(const http::Request& request, std::string_view needed) {
  PERCH_ASSIGN_OR_RETURN(std::optional<std::string> token,
                         http::TokenFromAuthorization(request.headers.Value("Authorization")));
  if (!token) {
    return Status(StatusCode::kUnauthenticated,
                  std::string(needed) + ": send 'Authorization: Bearer <token>'");
  }
  return std::move(*token);
}

// Who called, after checking the bearer token.
struct Caller {
  bool admin = false;
  std::string device;  // set for a device token
};

class FleetRoutes : public std::enable_shared_from_this<FleetRoutes> {
 public:
  FleetRoutes(FleetStore& store, FleetHttpOptions options, Logger logger)
      : store_(store), options_(std::move(options)), logger_(std::move(logger)) {}

  void Mount(http::Server& server);

 private:
  using Handler = std::function<void(const http::Request&, http::Response&)>;

  // Registers `handler` with the fleet API's body limit (a buffered body:
  // request.body holds it whole). The handler holds the routes alive for as
  // long as the server keeps it; the server answers anything thrown with 500.
  void Add(http::Server& server, std::string_view method, const std::string& pattern,
           Handler handler);

  Result<Caller> Authenticate(const http::Request& request) const;
  Status RequireAdmin(const http::Request& request) const;
  // Admin, or the device `name` itself.
  Status RequireDeviceOrAdmin(const http::Request& request, const std::string& name) const;

  FleetStore& store_;
  const FleetHttpOptions options_;
  const Logger logger_;
};

Result<Caller> FleetRoutes::Authenticate(const http::Request& request) const {
  PERCH_ASSIGN_OR_RETURN(const std::string token, TokenOf(request, "this call needs a token"));
  if (!options_.admin_token.empty() && http::TokensEqual(token, options_.admin_token)) {
    return Caller{.admin = true, .device = {}};
  }
  PERCH_ASSIGN_OR_RETURN(const Device device, store_.AuthenticateDevice(token));
  return Caller{.admin = false, .device = device.name};
}

Status FleetRoutes::RequireAdmin(const http::Request& request) const {
  PERCH_ASSIGN_OR_RETURN(const Caller caller, Authenticate(request));
  if (!caller.admin) {
    return Status(StatusCode::kPermissionDenied,
                  "device '" + caller.device + "' may not do this: it needs the admin token");
  }
  return Status::Ok();
}

Status FleetRoutes::RequireDeviceOrAdmin(const http::Request& request,
                                         const std::string& name) const {
  PERCH_ASSIGN_OR_RETURN(const Caller caller, Authenticate(request));
  if (!caller.admin && caller.device != name) {
    return Status(StatusCode::kPermissionDenied, "device '" + caller.device +
                                                     "' may act only for itself, not for '" +
                                                     name.substr(0, 80) + "'");
  }
  return Status::Ok();
}

void FleetRoutes::Add(http::Server& server, std::string_view method, const std::string& pattern,
                      Handler handler) {
  server.Route(
      method, pattern,
      [self = shared_from_this(), handler = std::move(handler)](http::Request& request,
                                                                http::Response& response) {
        const auto start = std::chrono::steady_clock::now();
        handler(request, response);
        if (self->options_.observe) {
          self->options_.observe(
              request, response,
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
        }
      },
      http::RouteOptions{.body = http::BodyMode::kBuffered,
                         .max_body_bytes = options_.max_body_bytes});
}

// Answers a Result with `encode(value)` and `status`, or its error.
template <typename T, typename Encode>
void Answer(http::Response& response, const Result<T>& result, int status, Encode encode) {
  if (!result.ok()) {
    SendError(response, result.status());
    return;
  }
  SendJson(response, status, encode(*result));
}

template <typename T>
std::string ListJson(const std::vector<T>& items) {
  std::vector<std::string> encoded;
  encoded.reserve(items.size());
  for (const T& item : items) {
    encoded.push_back(ToJson(item));
  }
  return JsonArray(encoded);
}

constexpr const char* kName = "([a-z0-9][a-z0-9_.-]{0,62})";

std::string Pattern(const std::string& prefix, const std::string& suffix = "") {
  return prefix + kName + suffix;
}

void FleetRoutes::Mount(http::Server& server) {
  const std::string api = "/api/v1";

  // Locations (admin).
  Add(server, "GET", api + "/locations", [this](const auto& request, auto& response) {
    if (const Status allowed = RequireAdmin(request); !allowed.ok()) {
      return SendError(response, allowed);
    }
    SendJson(response, 200, ListJson(store_.Locations()));
  });
  Add(server, "POST", api + "/locations", [this](const auto& request, auto& response) {
    if (const Status allowed = RequireAdmin(request); !allowed.ok()) {
      return SendError(response, allowed);
    }
    const auto spec = ParseLocationSpec(request.body);
    if (!spec.ok()) {
      return SendError(response, spec.status());
    }
    const auto created = store_.CreateLocation(*spec);
    if (created.ok()) {
      logger_.Info("location '{}' created", spec->name);
    }
    Answer(response, created, 201, [](const auto& value) { return ToJson(value); });
  });
  Add(server, "GET", Pattern(api + "/locations/"), [this](const auto& request, auto& response) {
    if (const Status allowed = RequireAdmin(request); !allowed.ok()) {
      return SendError(response, allowed);
    }
    Answer(response, store_.GetLocation(request.matches[1]), 200,
           [](const auto& value) { return ToJson(value); });
  });
  Add(server, "POST", Pattern(api + "/locations/", "/enrolment-token"),
      [this](const auto& request, auto& response) {
        if (const Status allowed = RequireAdmin(request); !allowed.ok()) {
          return SendError(response, allowed);
        }
        Answer(response, store_.RotateEnrolmentToken(request.matches[1]), 200,
               [](const std::string& token) {
                 return json{{"enrolment_token", token}}.dump();
               });
      });

  // Enrolment (a location's enrolment token).
  Add(server, "POST", api + "/enrol", [this](const auto& request, auto& response) {
    const auto token = TokenOf(request, "enrolment needs the location's enrolment token");
    if (!token.ok()) {
      return SendError(response, token.status());
    }
    const auto spec = ParseDeviceSpec(request.body);
    if (!spec.ok()) {
      return SendError(response, spec.status());
    }
    const auto enrolled = store_.Enrol(*token, *spec);
    if (!enrolled.ok()) {
      return SendError(response, enrolled.status());
    }
    if (enrolled->again) {
      // Nothing new was made: 200, the same device with a new token.
      logger_.Info(
          "device '{}' enrolled again with its enrolment key (its answer or device.json was "
          "lost): its previous device token no longer works",
          spec->name);
      return SendJson(response, 200, ToJson(static_cast<const WithToken<Device>&>(*enrolled)));
    }
    logger_.Info("device '{}' enrolled in location '{}'", spec->name, enrolled->value.location);
    SendJson(response, 201, ToJson(static_cast<const WithToken<Device>&>(*enrolled)));
  });

  // Devices.
  Add(server, "GET", api + "/devices", [this](const auto& request, auto& response) {
    if (const Status allowed = RequireAdmin(request); !allowed.ok()) {
      return SendError(response, allowed);
    }
    SendJson(response, 200, ListJson(store_.Devices()));
  });
  // What the dashboard's overview shows, counted here so that its answer
  // grows with the locations and rollouts, not with every device.
  Add(server, "GET", api + "/overview", [this](const auto& request, auto& response) {
    if (const Status allowed = RequireAdmin(request); !allowed.ok()) {
      return SendError(response, allowed);
    }
    const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
    const auto zero = [] {
      return json{{"online", 0}, {"offline", 0}, {"failing", 0}, {"revoked", 0}};
    };
    json devices = zero();
    std::map<std::string, json> by_location;
    json locations = json::array();
    for (const Location& location : store_.Locations()) {
      by_location[location.name] = zero();
    }
    for (const Device& device : store_.Devices()) {
      const std::string state(DeviceStateAt(device, now, options_.online_seconds));
      devices[state] = devices[state].get<int64_t>() + 1;
      if (const auto found = by_location.find(device.location); found != by_location.end()) {
        found->second[state] = found->second[state].get<int64_t>() + 1;
      }
    }
    for (const Location& location : store_.Locations()) {
      json item = by_location[location.name];
      item["name"] = location.name;
      item["description"] = location.description;
      locations.push_back(std::move(item));
    }
    json rollouts = json::array();
    for (const Deployment& deployment : store_.Deployments()) {
      const Revision* current = deployment.Current();
      if (current != nullptr && !current->promoted) {
        rollouts.push_back({{"deployment", deployment.name},
                            {"revision", current->number},
                            {"reference", current->reference}});
      }
    }
    SendJson(
        response, 200,
        json{{"now", now}, {"devices", devices}, {"locations", locations}, {"rollouts", rollouts}}
            .dump());
  });
  // The event log, newest first; at most FleetStore::kMaxEvents a call.
  Add(server, "GET", api + "/events", [this](const auto& request, auto& response) {
    if (const Status allowed = RequireAdmin(request); !allowed.ok()) {
      return SendError(response, allowed);
    }
    size_t limit = 100;
    if (const auto found = request.query.find("limit"); found != request.query.end()) {
      const std::string& text = found->second;
      const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), limit);
      if (error != std::errc() || end != text.data() + text.size() || limit < 1 ||
          limit > FleetStore::kMaxEvents) {
        return SendError(
            response, InvalidArgument("limit: '" + text.substr(0, 40) + "' is not between 1 and " +
                                      std::to_string(FleetStore::kMaxEvents)));
      }
    }
    SendJson(response, 200, ToJson(store_.Events(limit)));
  });
  Add(server, "GET", api + "/status", [this](const auto& request, auto& response) {
    if (const Status allowed = RequireAdmin(request); !allowed.ok()) {
      return SendError(response, allowed);
    }
    FleetStatus status{.now = std::chrono::duration_cast<std::chrono::seconds>(
                                  std::chrono::system_clock::now().time_since_epoch())
                                  .count(),
                       .devices = store_.Devices()};
    // ?location=NAME: that location's devices only (a dashboard page).
    if (const auto location = request.query.find("location"); location != request.query.end()) {
      std::erase_if(status.devices,
                    [&](const Device& device) { return device.location != location->second; });
    }
    SendJson(response, 200, ToJson(status));
  });
  Add(server, "GET", Pattern(api + "/devices/"), [this](const auto& request, auto& response) {
    const std::string& name = request.matches[1];
    if (const Status allowed = RequireDeviceOrAdmin(request, name); !allowed.ok()) {
      return SendError(response, allowed);
    }
    Answer(response, store_.GetDevice(name), 200, [](const auto& value) { return ToJson(value); });
  });
  Add(server, "POST", Pattern(api + "/devices/", "/revoke"),
      [this](const auto& request, auto& response) {
        if (const Status allowed = RequireAdmin(request); !allowed.ok()) {
          return SendError(response, allowed);
        }
        const std::string& name = request.matches[1];
        if (const Status revoked = store_.RevokeDevice(name); !revoked.ok()) {
          return SendError(response, revoked);
        }
        logger_.Info("device '{}' revoked", name);
        Answer(response, store_.GetDevice(name), 200,
               [](const auto& value) { return ToJson(value); });
      });
  Add(server, "POST", Pattern(api + "/devices/", "/heartbeat"),
      [this](const auto& request, auto& response) {
        const std::string& name = request.matches[1];
        if (const Status allowed = RequireDeviceOrAdmin(request, name); !allowed.ok()) {
          return SendError(response, allowed);
        }
        auto heartbeat = ParseHeartbeat(request.body);
        if (!heartbeat.ok()) {
          return SendError(response, heartbeat.status());
        }
        const std::optional<HeartbeatMetrics> metrics = heartbeat->metrics;
        if (const Status recorded = store_.RecordHeartbeat(name, std::move(*heartbeat));
            !recorded.ok()) {
          return SendError(response, recorded);
        }
        if (options_.metrics != nullptr && metrics) {
          const auto device = store_.GetDevice(name);
          const Status kept = device.ok()
                                  ? options_.metrics->Record(name, device->location, *metrics)
                                  : device.status();
          if (!kept.ok()) {
            // The heartbeat itself is stored; its figures are lost, not retried.
            logger_.Warn("the metrics of device '{}' were not kept: {}", name, kept.message());
          }
        }
        response.status = 204;
      });
  Add(server, "GET", Pattern(api + "/devices/", "/desired-state"),
      [this](const auto& request, auto& response) {
        const std::string& name = request.matches[1];
        if (const Status allowed = RequireDeviceOrAdmin(request, name); !allowed.ok()) {
          return SendError(response, allowed);
        }
        const auto state = store_.DesiredStateFor(name);
        if (!state.ok()) {
          return SendError(response, state.status());
        }
        const std::string etag = "\"" + state->etag + "\"";
        response.headers.Set("ETag", etag);
        if (request.headers.Value("If-None-Match") == etag) {
          response.status = 304;
          return;
        }
        SendJson(response, 200, ToJson(*state));
      });
  Add(server, "GET", Pattern(api + "/devices/", "/peers"),
      [this](const auto& request, auto& response) {
        const std::string& name = request.matches[1];
        if (const Status allowed = RequireDeviceOrAdmin(request, name); !allowed.ok()) {
          return SendError(response, allowed);
        }
        Answer(response, store_.PeersOf(name), 200,
               [](const auto& value) { return ToJson(value); });
      });

  // Deployments (admin).
  Add(server, "GET", api + "/deployments", [this](const auto& request, auto& response) {
    if (const Status allowed = RequireAdmin(request); !allowed.ok()) {
      return SendError(response, allowed);
    }
    SendJson(response, 200, ListJson(store_.Deployments()));
  });
  const auto deploy = [this](const http::Request& request, http::Response& response,
                             bool create_only) {
    if (const Status allowed = RequireAdmin(request); !allowed.ok()) {
      return SendError(response, allowed);
    }
    auto spec = ParseDeploymentSpec(request.body);
    if (!spec.ok()) {
      return SendError(response, spec.status());
    }
    if (!create_only && request.matches.size() > 1 && spec->name != request.matches[1]) {
      return SendError(response, InvalidArgument("name: '" + spec->name +
                                                 "' differs from the deployment in the URL"));
    }
    auto deployed = store_.Deploy(*spec, create_only);
    if (!deployed.ok()) {
      return SendError(response, deployed.status());
    }
    DeployOutcome outcome{.deployment = std::move(deployed).value(), .warnings = {}};
    if (store_.CountMatching(spec->selector) == 0) {
      outcome.warnings.push_back(
          "the selector matches no device yet: the deployment applies to "
          "devices that enrol or change to match it");
    }
    for (std::string& warning : PlacementWarnings(outcome.deployment)) {
      outcome.warnings.push_back(std::move(warning));
    }
    logger_.Info("deployment '{}' is at revision {}: {}", spec->name,
                 outcome.deployment.revisions.back().number, spec->reference);
    SendJson(response, create_only ? 201 : 200, ToJson(outcome));
  };
  Add(server, "POST", api + "/deployments",
      [deploy](const auto& request, auto& response) { deploy(request, response, true); });
  Add(server, "PUT", Pattern(api + "/deployments/"),
      [deploy](const auto& request, auto& response) { deploy(request, response, false); });
  Add(server, "GET", Pattern(api + "/deployments/"), [this](const auto& request, auto& response) {
    if (const Status allowed = RequireAdmin(request); !allowed.ok()) {
      return SendError(response, allowed);
    }
    Answer(response, store_.GetDeployment(request.matches[1]), 200,
           [](const auto& value) { return ToJson(value); });
  });
  Add(server, "POST", Pattern(api + "/deployments/", "/rollback"),
      [this](const auto& request, auto& response) {
        if (const Status allowed = RequireAdmin(request); !allowed.ok()) {
          return SendError(response, allowed);
        }
        const auto rolled_back = store_.Rollback(request.matches[1]);
        if (rolled_back.ok()) {
          logger_.Info("deployment '{}' rolled back to revision {}", rolled_back->name,
                       rolled_back->Current()->number);
        }
        Answer(response, rolled_back, 200, [](const auto& value) { return ToJson(value); });
      });
  // Promotes a running canary to every device now (the dashboard's and
  // an operator's override of the canary analysis), recorded as a verdict.
  Add(server, "POST", Pattern(api + "/deployments/", "/promote"),
      [this](const auto& request, auto& response) {
        if (const Status allowed = RequireAdmin(request); !allowed.ok()) {
          return SendError(response, allowed);
        }
        const std::string& name = request.matches[1];
        const auto deployment = store_.GetDeployment(name);
        if (!deployment.ok()) {
          return SendError(response, deployment.status());
        }
        const Revision* current = deployment->Current();
        CanaryVerdict verdict;
        verdict.at = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
        verdict.outcome = "promoted";
        verdict.reason = "promoted by an operator";
        const Status promoted =
            current == nullptr || current->rollout.strategy != RolloutStrategy::kCanary
                ? InvalidArgument("deployment '" + name + "' has no canary to promote")
                : store_.RecordVerdict(name, current->number, verdict);
        if (!promoted.ok()) {
          return SendError(response, promoted);
        }
        logger_.Info("deployment '{}' revision {} promoted by an operator", name, current->number);
        Answer(response, store_.GetDeployment(name), 200,
               [](const auto& value) { return ToJson(value); });
      });
  // Other paths the server answers: 404, or 405 with Allow for a known path.
}

}  // namespace

void MountFleetRoutes(http::Server& server, FleetStore& store, const FleetHttpOptions& options,
                      Logger logger) {
  std::make_shared<FleetRoutes>(store, options, std::move(logger))->Mount(server);
}

}  // namespace perch
