#include "fleet/metrics_http.h"

#include <charconv>
#include <nlohmann/json.hpp>

#include "http/credentials.h"
#include "http/errors.h"

namespace perch {
namespace {

using nlohmann::json;

Status RequireAdmin(const http::Request& request, const std::string& admin_token) {
  PERCH_ASSIGN_OR_RETURN(std::optional<std::string> token,
                         http::TokenFromAuthorization(request.headers.Value("Authorization")));
  if (!token) {
    return Status(StatusCode::kUnauthenticated,
                  "the metrics API needs the admin token: send 'Authorization: Bearer <token>'");
  }
  if (admin_token.empty() || !http::TokensEqual(*token, admin_token)) {
    return Status(StatusCode::kPermissionDenied, "the metrics API needs the admin token");
  }
  return Status::Ok();
}

// An optional integer query parameter; InvalidArgument naming it.
Result<std::optional<int64_t>> IntParam(const http::Request& request, const std::string& key) {
  const auto found = request.query.find(key);
  if (found == request.query.end()) {
    return std::optional<int64_t>();
  }
  const std::string& text = found->second;
  int64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || text.empty()) {
    return InvalidArgument(key + ": '" + text.substr(0, 40) + "' is not an integer");
  }
  return std::optional<int64_t>(value);
}

Result<MetricsQuery> ReadQuery(const http::Request& request, int64_t now) {
  MetricsQuery query;
  PERCH_ASSIGN_OR_RETURN(const auto to, IntParam(request, "to"));
  PERCH_ASSIGN_OR_RETURN(const auto from, IntParam(request, "from"));
  PERCH_ASSIGN_OR_RETURN(const auto limit, IntParam(request, "limit"));
  PERCH_ASSIGN_OR_RETURN(const auto version, IntParam(request, "version"));
  query.to = to.value_or(now);
  query.from = from.value_or(query.to - 3600);
  query.limit = limit.value_or(kDefaultMetricsPage);
  query.version = version;
  for (const char* key : {"model", "location"}) {
    const auto found = request.query.find(key);
    if (found != request.query.end() && found->second.size() > 128) {
      return InvalidArgument(std::string(key) + ": at most 128 characters");
    }
  }
  if (const auto model = request.query.find("model"); model != request.query.end()) {
    query.model = model->second;
  }
  if (const auto location = request.query.find("location"); location != request.query.end()) {
    query.location = location->second;
  }
  return query;
}

enum class Scope { kDevice, kModel, kLocation };

}  // namespace

std::string ToJson(const MetricsPage& page) {
  json models = json::array();
  for (const ModelPoint& point : page.models) {
    models.push_back({{"at", point.at},
                      {"device", point.device},
                      {"location", point.location},
                      {"model", point.metrics.name},
                      {"version", point.metrics.version},
                      {"requests", point.metrics.requests},
                      {"failures", point.metrics.failures},
                      {"p50_ms", point.metrics.p50_ms},
                      {"p99_ms", point.metrics.p99_ms}});
  }
  json vitals = json::array();
  for (const VitalsPoint& point : page.vitals) {
    json item = {{"at", point.at},
                 {"device", point.device},
                 {"location", point.location},
                 {"cpu_percent", point.vitals.cpu_percent},
                 {"memory_used_bytes", point.vitals.memory_used_bytes},
                 {"memory_total_bytes", point.vitals.memory_total_bytes},
                 {"disk_used_bytes", point.vitals.disk_used_bytes},
                 {"disk_total_bytes", point.vitals.disk_total_bytes}};
    if (point.vitals.temperature_celsius) {
      item["temperature_celsius"] = *point.vitals.temperature_celsius;
    }
    vitals.push_back(std::move(item));
  }
  json out = {{"models", models}, {"vitals", vitals}, {"next_from", nullptr}};
  if (page.next_from) {
    out["next_from"] = *page.next_from;
  }
  return out.dump();
}

void MountMetricsRoutes(http::Server& server, MetricsStore& store, std::string admin_token,
                        Logger logger) {
  const auto mount = [&](Scope scope, const std::string& path) {
    server.Route(
        "GET", "/api/v1/metrics/" + path + "/([A-Za-z0-9][A-Za-z0-9_.-]{0,127})",
        [&store, admin_token, logger, scope](http::Request& request, http::Response& response) {
          if (const Status allowed = RequireAdmin(request, admin_token); !allowed.ok()) {
            if (allowed.code() == StatusCode::kUnauthenticated) {
              response.headers.Set("WWW-Authenticate", http::BearerChallenge("perch-hub"));
            }
            return http::SetError(response, allowed);
          }
          const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                                  std::chrono::system_clock::now().time_since_epoch())
                                  .count();
          auto query = ReadQuery(request, now);
          if (!query.ok()) {
            return http::SetError(response, query.status());
          }
          const std::string name(request.match(1));
          switch (scope) {
            case Scope::kDevice:
              query->device = name;
              break;
            case Scope::kModel:
              query->model = name;
              break;
            case Scope::kLocation:
              query->location = name;
              break;
          }
          const auto page = store.Query(*query);
          if (!page.ok()) {
            if (page.status().code() != StatusCode::kInvalidArgument) {
              logger.Error("metrics query failed: {}", page.status().message());
            }
            return http::SetError(response, page.status());
          }
          http::SetJson(response, 200, ToJson(*page));
        });
  };
  mount(Scope::kDevice, "devices");
  mount(Scope::kModel, "models");
  mount(Scope::kLocation, "locations");
}

}  // namespace perch
