#include "fleet/fleet_http.h"

#include <httplib.h>
#include <openssl/crypto.h>

#include <exception>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>

#include "core/http_status.h"
#include "fleet/fleet_json.h"

namespace perch {
namespace {

using nlohmann::json;

void SendJson(httplib::Response& response, int status, const std::string& body) {
  response.status = status;
  response.set_content(body, "application/json");
}

void SendError(httplib::Response& response, const Status& status) {
  if (status.code() == StatusCode::kUnauthenticated) {
    response.set_header("WWW-Authenticate", "Bearer realm=\"perch-hub\"");
  }
  SendJson(response, HttpStatusFor(status.code()),
           json{{"error", status.message()}, {"code", ToString(status.code())}}.dump());
}

std::string BearerToken(const httplib::Request& request) {
  const std::string header = request.get_header_value("Authorization");
  constexpr std::string_view kBearer = "Bearer ";
  return header.starts_with(kBearer) ? header.substr(kBearer.size()) : std::string();
}

bool SameSecret(const std::string& given, const std::string& expected) {
  return !expected.empty() && given.size() == expected.size() &&
         CRYPTO_memcmp(given.data(), expected.data(), given.size()) == 0;
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

  void Mount(httplib::Server& server);

 private:
  using Handler =
      std::function<void(const httplib::Request&, const std::string& body, httplib::Response&)>;

  // Wraps a handler: reads the body up to the limit, answers every escaped
  // exception with 500, and never lets one reach the HTTP library.
  httplib::Server::HandlerWithContentReader WithBody(Handler handler) const;
  httplib::Server::Handler WithoutBody(Handler handler) const;

  Result<Caller> Authenticate(const httplib::Request& request) const;
  Status RequireAdmin(const httplib::Request& request) const;
  // Admin, or the device `name` itself.
  Status RequireDeviceOrAdmin(const httplib::Request& request, const std::string& name) const;

  FleetStore& store_;
  const FleetHttpOptions options_;
  const Logger logger_;
};

Result<Caller> FleetRoutes::Authenticate(const httplib::Request& request) const {
  const std::string token = BearerToken(request);
  if (token.empty()) {
    return Status(StatusCode::kUnauthenticated,
                  "this call needs a token: send 'Authorization: Bearer <token>'");
  }
  if (SameSecret(token, options_.admin_token)) {
    return Caller{.admin = true, .device = {}};
  }
  PERCH_ASSIGN_OR_RETURN(const Device device, store_.AuthenticateDevice(token));
  return Caller{.admin = false, .device = device.name};
}

Status FleetRoutes::RequireAdmin(const httplib::Request& request) const {
  PERCH_ASSIGN_OR_RETURN(const Caller caller, Authenticate(request));
  if (!caller.admin) {
    return Status(StatusCode::kPermissionDenied,
                  "device '" + caller.device + "' may not do this: it needs the admin token");
  }
  return Status::Ok();
}

Status FleetRoutes::RequireDeviceOrAdmin(const httplib::Request& request,
                                         const std::string& name) const {
  PERCH_ASSIGN_OR_RETURN(const Caller caller, Authenticate(request));
  if (!caller.admin && caller.device != name) {
    return Status(StatusCode::kPermissionDenied, "device '" + caller.device +
                                                     "' may act only for itself, not for '" +
                                                     name.substr(0, 80) + "'");
  }
  return Status::Ok();
}

httplib::Server::HandlerWithContentReader FleetRoutes::WithBody(Handler handler) const {
  // The handlers hold the routes alive for as long as the server keeps them.
  return [self = shared_from_this(), handler = std::move(handler)](
             const httplib::Request& request, httplib::Response& response,
             const httplib::ContentReader& read_content) {
    try {
      const size_t limit = self->options_.max_body_bytes;
      std::string body;
      bool too_large = request.get_header_value<uint64_t>("Content-Length") > limit;
      const bool complete = !too_large && read_content([&](const char* data, size_t length) {
        if (length > limit - body.size()) {
          too_large = true;
          return false;
        }
        body.append(data, length);
        return true;
      });
      if (too_large) {
        SendJson(response, 413,
                 json{{"error", "the body is larger than the fleet API's limit of " +
                                    std::to_string(limit) + " bytes"},
                      {"code", "InvalidArgument"}}
                     .dump());
        return;
      }
      if (!complete) {
        SendError(response, InvalidArgument("the request body could not be read completely"));
        return;
      }
      handler(request, body, response);
    } catch (const std::exception& error) {
      self->logger_.Error("{} {}: {}", request.method, request.path, error.what());
      SendError(response, Internal("the hub failed to handle this request; see its log"));
    }
  };
}

httplib::Server::Handler FleetRoutes::WithoutBody(Handler handler) const {
  return [self = shared_from_this(), handler = std::move(handler)](const httplib::Request& request,
                                                                   httplib::Response& response) {
    try {
      handler(request, std::string(), response);
    } catch (const std::exception& error) {
      self->logger_.Error("{} {}: {}", request.method, request.path, error.what());
      SendError(response, Internal("the hub failed to handle this request; see its log"));
    }
  };
}

// Answers a Result with `encode(value)` and `status`, or its error.
template <typename T, typename Encode>
void Answer(httplib::Response& response, const Result<T>& result, int status, Encode encode) {
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

void FleetRoutes::Mount(httplib::Server& server) {
  const std::string api = "/api/v1";

  // Locations (admin).
  server.Get(api + "/locations",
             WithoutBody([this](const auto& request, const auto&, auto& response) {
               if (const Status allowed = RequireAdmin(request); !allowed.ok()) {
                 return SendError(response, allowed);
               }
               SendJson(response, 200, ListJson(store_.Locations()));
             }));
  server.Post(api + "/locations",
              WithBody([this](const auto& request, const auto& body, auto& response) {
                if (const Status allowed = RequireAdmin(request); !allowed.ok()) {
                  return SendError(response, allowed);
                }
                const auto spec = ParseLocationSpec(body);
                if (!spec.ok()) {
                  return SendError(response, spec.status());
                }
                const auto created = store_.CreateLocation(*spec);
                if (created.ok()) {
                  logger_.Info("location '{}' created", spec->name);
                }
                Answer(response, created, 201, [](const auto& value) { return ToJson(value); });
              }));
  server.Get(Pattern(api + "/locations/"),
             WithoutBody([this](const auto& request, const auto&, auto& response) {
               if (const Status allowed = RequireAdmin(request); !allowed.ok()) {
                 return SendError(response, allowed);
               }
               Answer(response, store_.GetLocation(request.matches[1].str()), 200,
                      [](const auto& value) { return ToJson(value); });
             }));
  server.Post(Pattern(api + "/locations/", "/enrolment-token"),
              WithBody([this](const auto& request, const auto&, auto& response) {
                if (const Status allowed = RequireAdmin(request); !allowed.ok()) {
                  return SendError(response, allowed);
                }
                Answer(response, store_.RotateEnrolmentToken(request.matches[1].str()), 200,
                       [](const std::string& token) {
                         return json{{"enrolment_token", token}}.dump();
                       });
              }));

  // Enrolment (a location's enrolment token).
  server.Post(
      api + "/enrol", WithBody([this](const auto& request, const auto& body, auto& response) {
        const std::string token = BearerToken(request);
        if (token.empty()) {
          return SendError(response, Status(StatusCode::kUnauthenticated,
                                            "enrolment needs the location's enrolment token: send "
                                            "'Authorization: Bearer <token>'"));
        }
        const auto spec = ParseDeviceSpec(body);
        if (!spec.ok()) {
          return SendError(response, spec.status());
        }
        const auto enrolled = store_.Enrol(token, *spec);
        if (enrolled.ok()) {
          logger_.Info("device '{}' enrolled in location '{}'", spec->name,
                       enrolled->value.location);
        }
        Answer(response, enrolled, 201, [](const auto& value) { return ToJson(value); });
      }));

  // Devices.
  server.Get(api + "/devices",
             WithoutBody([this](const auto& request, const auto&, auto& response) {
               if (const Status allowed = RequireAdmin(request); !allowed.ok()) {
                 return SendError(response, allowed);
               }
               SendJson(response, 200, ListJson(store_.Devices()));
             }));
  server.Get(api + "/status", WithoutBody([this](const auto& request, const auto&, auto& response) {
               if (const Status allowed = RequireAdmin(request); !allowed.ok()) {
                 return SendError(response, allowed);
               }
               const FleetStatus status{
                   .now = std::chrono::duration_cast<std::chrono::seconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count(),
                   .devices = store_.Devices()};
               SendJson(response, 200, ToJson(status));
             }));
  server.Get(Pattern(api + "/devices/"),
             WithoutBody([this](const auto& request, const auto&, auto& response) {
               const std::string name = request.matches[1].str();
               if (const Status allowed = RequireDeviceOrAdmin(request, name); !allowed.ok()) {
                 return SendError(response, allowed);
               }
               Answer(response, store_.GetDevice(name), 200,
                      [](const auto& value) { return ToJson(value); });
             }));
  server.Post(Pattern(api + "/devices/", "/revoke"),
              WithBody([this](const auto& request, const auto&, auto& response) {
                if (const Status allowed = RequireAdmin(request); !allowed.ok()) {
                  return SendError(response, allowed);
                }
                const std::string name = request.matches[1].str();
                if (const Status revoked = store_.RevokeDevice(name); !revoked.ok()) {
                  return SendError(response, revoked);
                }
                logger_.Info("device '{}' revoked", name);
                Answer(response, store_.GetDevice(name), 200,
                       [](const auto& value) { return ToJson(value); });
              }));
  server.Post(Pattern(api + "/devices/", "/heartbeat"),
              WithBody([this](const auto& request, const auto& body, auto& response) {
                const std::string name = request.matches[1].str();
                if (const Status allowed = RequireDeviceOrAdmin(request, name); !allowed.ok()) {
                  return SendError(response, allowed);
                }
                auto heartbeat = ParseHeartbeat(body);
                if (!heartbeat.ok()) {
                  return SendError(response, heartbeat.status());
                }
                if (const Status recorded = store_.RecordHeartbeat(name, std::move(*heartbeat));
                    !recorded.ok()) {
                  return SendError(response, recorded);
                }
                response.status = 204;
              }));
  server.Get(Pattern(api + "/devices/", "/desired-state"),
             WithoutBody([this](const auto& request, const auto&, auto& response) {
               const std::string name = request.matches[1].str();
               if (const Status allowed = RequireDeviceOrAdmin(request, name); !allowed.ok()) {
                 return SendError(response, allowed);
               }
               const auto state = store_.DesiredStateFor(name);
               if (!state.ok()) {
                 return SendError(response, state.status());
               }
               const std::string etag = "\"" + state->etag + "\"";
               response.set_header("ETag", etag);
               if (request.get_header_value("If-None-Match") == etag) {
                 response.status = 304;
                 return;
               }
               SendJson(response, 200, ToJson(*state));
             }));

  // Deployments (admin).
  server.Get(api + "/deployments",
             WithoutBody([this](const auto& request, const auto&, auto& response) {
               if (const Status allowed = RequireAdmin(request); !allowed.ok()) {
                 return SendError(response, allowed);
               }
               SendJson(response, 200, ListJson(store_.Deployments()));
             }));
  const auto deploy = [this](const httplib::Request& request, const std::string& body,
                             httplib::Response& response, bool create_only) {
    if (const Status allowed = RequireAdmin(request); !allowed.ok()) {
      return SendError(response, allowed);
    }
    auto spec = ParseDeploymentSpec(body);
    if (!spec.ok()) {
      return SendError(response, spec.status());
    }
    if (!create_only && request.matches.size() > 1 && spec->name != request.matches[1].str()) {
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
    logger_.Info("deployment '{}' is at revision {}: {}", spec->name,
                 outcome.deployment.revisions.back().number, spec->reference);
    SendJson(response, create_only ? 201 : 200, ToJson(outcome));
  };
  server.Post(api + "/deployments",
              WithBody([deploy](const auto& request, const auto& body, auto& response) {
                deploy(request, body, response, true);
              }));
  server.Put(Pattern(api + "/deployments/"),
             WithBody([deploy](const auto& request, const auto& body, auto& response) {
               deploy(request, body, response, false);
             }));
  server.Get(Pattern(api + "/deployments/"),
             WithoutBody([this](const auto& request, const auto&, auto& response) {
               if (const Status allowed = RequireAdmin(request); !allowed.ok()) {
                 return SendError(response, allowed);
               }
               Answer(response, store_.GetDeployment(request.matches[1].str()), 200,
                      [](const auto& value) { return ToJson(value); });
             }));
  server.Post(Pattern(api + "/deployments/", "/rollback"),
              WithBody([this](const auto& request, const auto&, auto& response) {
                if (const Status allowed = RequireAdmin(request); !allowed.ok()) {
                  return SendError(response, allowed);
                }
                const auto rolled_back = store_.Rollback(request.matches[1].str());
                if (rolled_back.ok()) {
                  logger_.Info("deployment '{}' rolled back to revision {}", rolled_back->name,
                               rolled_back->Current()->number);
                }
                Answer(response, rolled_back, 200, [](const auto& value) { return ToJson(value); });
              }));

  const auto unknown = [](const httplib::Request& request, httplib::Response& response) {
    SendError(response, NotFound("the hub has no " + request.method + " " +
                                 request.path.substr(0, 200) + " (see docs/fleet.md)"));
  };
  server.Get(api + "/.*", unknown);
  server.Post(api + "/.*", unknown);
  server.Put(api + "/.*", unknown);
  server.Delete(api + "/.*", unknown);
}

}  // namespace

void MountFleetRoutes(httplib::Server& server, FleetStore& store, const FleetHttpOptions& options,
                      Logger logger) {
  std::make_shared<FleetRoutes>(store, options, std::move(logger))->Mount(server);
}

}  // namespace perch
