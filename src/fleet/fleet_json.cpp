#include "fleet/fleet_json.h"

#include <fmt/format.h>

#include <algorithm>
#include <iterator>
#include <nlohmann/json.hpp>

#include "models/repository.h"

namespace perch {
namespace {

using nlohmann::json;

// Reads the fields of one JSON object, remembering the first problem with
// the full path of the field, so that parsers read straight through and
// report once.
class Fields {
 public:
  Fields(const json& object, std::string path, Status& error)
      : object_(object), path_(std::move(path)), error_(error) {
    if (!object_.is_object()) {
      Fail(path_.empty() ? "the body" : path_, "must be a JSON object");
    }
  }

  std::string Path(std::string_view key) const {
    return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
  }
  const json* Find(std::string_view key) const {
    if (!error_.ok() || !object_.is_object()) {
      return nullptr;
    }
    const auto it = object_.find(key);
    return it == object_.end() || it->is_null() ? nullptr : &*it;
  }
  void Fail(const std::string& field, std::string_view problem) {
    if (error_.ok()) {
      error_ = InvalidArgument(field + ": " + std::string(problem));
    }
  }

  std::string String(std::string_view key, bool required = false) {
    const json* value = Find(key);
    if (value == nullptr) {
      if (required && error_.ok()) {
        Fail(Path(key), "is required");
      }
      return {};
    }
    if (!value->is_string()) {
      Fail(Path(key), "must be a string");
      return {};
    }
    return value->get<std::string>();
  }
  int64_t Int(std::string_view key, int64_t fallback = 0) {
    const json* value = Find(key);
    if (value == nullptr) {
      return fallback;
    }
    if (!value->is_number_integer()) {
      Fail(Path(key), "must be an integer");
      return fallback;
    }
    return value->get<int64_t>();
  }
  double Number(std::string_view key) {
    const json* value = Find(key);
    if (value == nullptr) {
      return 0;
    }
    if (!value->is_number()) {
      Fail(Path(key), "must be a number");
      return 0;
    }
    return value->get<double>();
  }
  bool Bool(std::string_view key) {
    const json* value = Find(key);
    if (value == nullptr) {
      return false;
    }
    if (!value->is_boolean()) {
      Fail(Path(key), "must be true or false");
      return false;
    }
    return value->get<bool>();
  }
  std::vector<std::string> Strings(std::string_view key) {
    std::vector<std::string> strings;
    const json* value = Find(key);
    if (value == nullptr) {
      return strings;
    }
    if (!value->is_array()) {
      Fail(Path(key), "must be an array of strings");
      return strings;
    }
    for (const auto& item : *value) {
      if (!item.is_string()) {
        Fail(Path(key), "must be an array of strings");
        return {};
      }
      strings.push_back(item.get<std::string>());
    }
    return strings;
  }
  Labels LabelMap(std::string_view key) {
    Labels labels;
    const json* value = Find(key);
    if (value == nullptr) {
      return labels;
    }
    if (!value->is_object()) {
      Fail(Path(key), "must be an object of string values");
      return labels;
    }
    for (const auto& [name, item] : value->items()) {
      const std::string field = Path(key) + "." + name;
      if (!item.is_string()) {
        Fail(field, "must be a string");
        return {};
      }
      if (!IsValidLabel(name, item.get<std::string>())) {
        Fail(field,
             "label keys are lowercase letters, digits, '.', '_', '-' (at most 64); values at "
             "most 256 printable characters");
        return {};
      }
      labels[name] = item.get<std::string>();
    }
    return labels;
  }
  // Calls `read` with the fields of each object of the array `key`.
  template <typename Read>
  void ForEach(std::string_view key, bool required, Read read) {
    const json* items = Find(key);
    if (items == nullptr || !items->is_array()) {
      if (items != nullptr || required) {
        Fail(Path(key), "must be an array");
      }
      return;
    }
    for (size_t i = 0; i < items->size() && error_.ok(); ++i) {
      Fields item(items->at(i), Path(key) + "[" + std::to_string(i) + "]", error_);
      read(item);
    }
  }

  // The fields of the object `key`, reporting into the same error.
  Fields Nested(std::string_view key) { return Fields(Object(key), Path(key), error_); }

  const json& Object(std::string_view key) {
    static const json kEmpty = json::object();
    const json* value = Find(key);
    return value == nullptr ? kEmpty : *value;
  }

 private:
  const json& object_;
  std::string path_;
  Status& error_;
};

template <typename T>
Result<T> Finish(T value, const Status& error) {
  if (!error.ok()) {
    return error;
  }
  return value;
}

json Parse(std::string_view text, Status& error) {
  json parsed = json::parse(text, nullptr, false);
  if (parsed.is_discarded()) {
    error = InvalidArgument("the body is not valid JSON");
  }
  return parsed;
}

void CheckName(Fields& fields, std::string_view key, const std::string& name) {
  if (!name.empty() && !IsValidFleetName(name)) {
    fields.Fail(fields.Path(key),
                "'" + name.substr(0, 80) +
                    "' is not a valid name: 1 to 64 of lowercase letters, digits, '.', '_' and "
                    "'-', starting and ending with a letter or digit");
  }
}

// Device facts and fact selectors have their parsers in device_facts_json.cpp;
// their error ("facts.cores: must be ...") is reported under `key`'s full
// path ("selector.facts.cores: must be ...").
template <typename T>
bool ReadFacts(Fields& fields, std::string_view key, Result<T> parsed, T& out) {
  if (!parsed.ok()) {
    const std::string& message = parsed.status().message();
    const size_t colon = message.find(": ");
    const size_t prefix = std::string_view("facts").size();
    const bool named = message.rfind("facts", 0) == 0 && colon != std::string::npos;
    fields.Fail(fields.Path(key) + (named ? message.substr(prefix, colon - prefix) : ""),
                named ? message.substr(colon + 2) : message);
    return false;
  }
  out = std::move(*parsed);
  return true;
}

json LabelsJson(const Labels& labels) { return labels.empty() ? json::object() : json(labels); }

json SelectorJson(const Selector& selector) {
  json out = json::object();
  if (!selector.location.empty()) {
    out["location"] = selector.location;
  }
  if (!selector.labels.empty()) {
    out["labels"] = selector.labels;
  }
  if (!selector.architecture.empty()) {
    out["architecture"] = selector.architecture;
  }
  if (!selector.device.empty()) {
    out["device"] = selector.device;
  }
  if (!selector.facts.empty()) {
    out["facts"] = json::parse(ToJson(selector.facts));
  }
  return out;
}

json RolloutJson(const Rollout& rollout) {
  json out = {{"strategy", ToString(rollout.strategy)}};
  if (rollout.strategy == RolloutStrategy::kCanary) {
    out["canary_percent"] = rollout.canary_percent;
    out["canary_healthy_seconds"] = rollout.canary_healthy_seconds;
  }
  if (rollout.require_signature) {
    out["require_signature"] = true;
  }
  if (rollout.analysis) {
    const CanaryAnalysis& analysis = *rollout.analysis;
    out["analysis"] = {{"window_seconds", analysis.window_seconds},
                       {"min_requests", analysis.min_requests},
                       {"max_failure_rate_increase", analysis.max_failure_rate_increase},
                       {"max_p99_ratio", analysis.max_p99_ratio},
                       {"failing_windows", analysis.failing_windows},
                       {"passing_windows", analysis.passing_windows},
                       {"deadline_seconds", analysis.deadline_seconds},
                       {"max_load_failure_percent", analysis.max_load_failure_percent}};
  }
  return out;
}

json VerdictJson(const CanaryVerdict& verdict) {
  return {{"at", verdict.at},
          {"outcome", verdict.outcome},
          {"window_start", verdict.window_start},
          {"window_end", verdict.window_end},
          {"baseline",
           {{"version", verdict.baseline_version},
            {"requests", verdict.baseline_requests},
            {"failures", verdict.baseline_failures},
            {"p99_ms", verdict.baseline_p99_ms}}},
          {"canary",
           {{"version", verdict.canary_version},
            {"requests", verdict.canary_requests},
            {"failures", verdict.canary_failures},
            {"p99_ms", verdict.canary_p99_ms}}},
          {"reason", verdict.reason}};
}

json MetricsJson(const HeartbeatMetrics& metrics) {
  json models = json::array();
  for (const ModelMetrics& model : metrics.models) {
    models.push_back({{"name", model.name},
                      {"version", model.version},
                      {"requests", model.requests},
                      {"failures", model.failures},
                      {"p50_ms", model.p50_ms},
                      {"p99_ms", model.p99_ms}});
  }
  const DeviceVitals& vitals = metrics.vitals;
  json out_vitals = {{"cpu_percent", vitals.cpu_percent},
                     {"memory_used_bytes", vitals.memory_used_bytes},
                     {"memory_total_bytes", vitals.memory_total_bytes},
                     {"disk_used_bytes", vitals.disk_used_bytes},
                     {"disk_total_bytes", vitals.disk_total_bytes}};
  if (vitals.temperature_celsius) {
    out_vitals["temperature_celsius"] = *vitals.temperature_celsius;
  }
  return {
      {"interval_seconds", metrics.interval_seconds}, {"models", models}, {"vitals", out_vitals}};
}

json HeartbeatJson(const Heartbeat& heartbeat) {
  json models = json::array();
  for (const ModelReport& model : heartbeat.models) {
    json item = {{"name", model.name},
                 {"version", model.version},
                 {"reference", model.reference},
                 {"digest", model.digest},
                 {"state", model.state}};
    if (!model.error.empty()) {
      item["error"] = model.error;
    }
    if (!model.signature.state.empty()) {
      json signature = {{"state", model.signature.state}};
      if (!model.signature.key.empty()) {
        signature["key"] = model.signature.key;
        signature["key_sha256"] = model.signature.key_sha256;
      }
      item["signature"] = std::move(signature);
    }
    models.push_back(std::move(item));
  }
  json out = {{"models", models},
              {"errors", heartbeat.errors},
              {"load", heartbeat.load},
              {"memory_available_bytes", heartbeat.memory_available_bytes},
              {"outbox_depth", heartbeat.outbox_depth},
              {"last_inference_at", heartbeat.last_inference_at},
              {"applied_etag", heartbeat.applied_etag},
              {"bundle_generation", heartbeat.bundle_generation},
              {"advertise_url", heartbeat.advertise_url},
              {"grpc_address", heartbeat.grpc_address},
              {"blobs", heartbeat.blobs}};
  if (heartbeat.metrics) {
    out["metrics"] = MetricsJson(*heartbeat.metrics);
  }
  if (heartbeat.facts) {
    out["facts"] = json::parse(ToJson(*heartbeat.facts));
  }
  return out;
}

json DeviceJson(const Device& device) {
  json out = {{"name", device.name},
              {"location", device.location},
              {"labels", LabelsJson(device.labels)},
              {"architecture", device.architecture},
              {"perch_version", device.perch_version},
              {"addresses", device.addresses},
              {"enrolled_at", device.enrolled_at},
              {"last_seen", device.last_seen},
              {"revoked", device.revoked},
              {"revoked_at", device.revoked_at},
              {"facts", json::parse(ToJson(device.facts))}};
  if (device.heartbeat) {
    out["heartbeat"] = HeartbeatJson(*device.heartbeat);
  }
  return out;
}

json EventJson(const FleetEvent& event) {
  json out = {
      {"at", event.at}, {"kind", event.kind}, {"subject", event.subject}, {"detail", event.detail}};
  if (event.revision != 0) {
    out["revision"] = event.revision;
  }
  return out;
}

json RevisionJson(const Revision& revision) {
  json out = {{"revision", revision.number},
              {"reference", revision.reference},
              {"selector", SelectorJson(revision.selector)},
              {"rollout", RolloutJson(revision.rollout)},
              {"created_at", revision.created_at},
              {"rolled_back", revision.rolled_back},
              {"rolled_back_at", revision.rolled_back_at},
              {"promoted", revision.promoted},
              {"replicas", revision.replicas}};
  if (revision.healthy_since) {
    out["healthy_since"] = *revision.healthy_since;
  }
  if (!revision.verdicts.empty()) {
    json verdicts = json::array();
    for (const CanaryVerdict& verdict : revision.verdicts) {
      verdicts.push_back(VerdictJson(verdict));
    }
    out["verdicts"] = std::move(verdicts);
  }
  return out;
}

json LocationJson(const Location& location) {
  return {{"name", location.name},
          {"description", location.description},
          {"labels", LabelsJson(location.labels)},
          {"created_at", location.created_at}};
}

json DeploymentJson(const Deployment& deployment) {
  json revisions = json::array();
  for (const Revision& revision : deployment.revisions) {
    revisions.push_back(RevisionJson(revision));
  }
  json out = {{"name", deployment.name}, {"revisions", revisions}};
  if (const Revision* current = deployment.Current()) {
    out["current"] = current->number;
  }
  if (!deployment.placements.empty()) {
    json placements = json::array();
    for (const Placement& placement : deployment.placements) {
      placements.push_back({{"location", placement.location},
                            {"devices", placement.devices},
                            {"replicas", placement.replicas}});
    }
    out["placements"] = std::move(placements);
  }
  if (const auto warnings = PlacementWarnings(deployment); !warnings.empty()) {
    out["warnings"] = warnings;
  }
  return out;
}

Location ReadLocation(Fields& fields, Status&) {
  return Location{.name = fields.String("name", true),
                  .description = fields.String("description"),
                  .labels = fields.LabelMap("labels"),
                  .created_at = fields.Int("created_at")};
}

Selector ReadSelector(Fields& fields) {
  Selector selector;
  selector.location = fields.String("location");
  CheckName(fields, "location", selector.location);
  selector.labels = fields.LabelMap("labels");
  selector.architecture = fields.String("architecture");
  selector.device = fields.String("device");
  CheckName(fields, "device", selector.device);
  if (const json* facts = fields.Find("facts")) {
    ReadFacts(fields, "facts", ParseFactSelector(facts->dump()), selector.facts);
  }
  return selector;
}

// Every figure within what makes sense, so that a typo cannot make a
// canary promote or roll back on nothing.
CanaryAnalysis ReadAnalysis(Fields& fields) {
  CanaryAnalysis analysis;
  const auto integer = [&](std::string_view key, int64_t fallback, int64_t least, int64_t most) {
    const int64_t value = fields.Int(key, fallback);
    if (value < least || value > most) {
      fields.Fail(fields.Path(key),
                  "must be between " + std::to_string(least) + " and " + std::to_string(most));
    }
    return value;
  };
  const auto number = [&](std::string_view key, double fallback, double least, double most) {
    if (fields.Find(key) == nullptr) {
      return fallback;
    }
    const double value = fields.Number(key);
    if (!(value >= least && value <= most)) {
      fields.Fail(fields.Path(key), "must be between " + fmt::format("{}", least) + " and " +
                                        fmt::format("{}", most));
    }
    return value;
  };
  analysis.window_seconds = integer("window_seconds", analysis.window_seconds, 1, 86400);
  analysis.min_requests = integer("min_requests", analysis.min_requests, 1, 1000000000);
  analysis.max_failure_rate_increase =
      number("max_failure_rate_increase", analysis.max_failure_rate_increase, 0, 1);
  analysis.max_p99_ratio = number("max_p99_ratio", analysis.max_p99_ratio, 1, 1000);
  analysis.failing_windows = integer("failing_windows", analysis.failing_windows, 1, 100);
  analysis.passing_windows = integer("passing_windows", analysis.passing_windows, 1, 100);
  analysis.deadline_seconds =
      integer("deadline_seconds", analysis.deadline_seconds, 10, 30 * 86400);
  analysis.max_load_failure_percent =
      integer("max_load_failure_percent", analysis.max_load_failure_percent, 1, 100);
  return analysis;
}

CanaryVerdict ReadVerdict(Fields& fields, Status& error) {
  CanaryVerdict verdict;
  verdict.at = fields.Int("at");
  verdict.outcome = fields.String("outcome");
  verdict.window_start = fields.Int("window_start");
  verdict.window_end = fields.Int("window_end");
  Fields baseline(fields.Object("baseline"), fields.Path("baseline"), error);
  verdict.baseline_version = baseline.Int("version");
  verdict.baseline_requests = baseline.Int("requests");
  verdict.baseline_failures = baseline.Int("failures");
  verdict.baseline_p99_ms = baseline.Number("p99_ms");
  Fields canary(fields.Object("canary"), fields.Path("canary"), error);
  verdict.canary_version = canary.Int("version");
  verdict.canary_requests = canary.Int("requests");
  verdict.canary_failures = canary.Int("failures");
  verdict.canary_p99_ms = canary.Number("p99_ms");
  verdict.reason = fields.String("reason");
  return verdict;
}

Rollout ReadRollout(Fields& fields) {
  Rollout rollout;
  const std::string strategy = fields.String("strategy");
  if (!strategy.empty()) {
    const auto parsed = RolloutStrategyFromString(strategy);
    if (!parsed) {
      fields.Fail(fields.Path("strategy"), "must be all-at-once or canary");
      return rollout;
    }
    rollout.strategy = *parsed;
  }
  rollout.canary_percent = static_cast<int>(fields.Int("canary_percent", 0));
  rollout.canary_healthy_seconds = fields.Int("canary_healthy_seconds", 0);
  rollout.require_signature = fields.Bool("require_signature");
  if (rollout.strategy == RolloutStrategy::kCanary &&
      (rollout.canary_percent < 1 || rollout.canary_percent > 99)) {
    fields.Fail(fields.Path("canary_percent"), "must be between 1 and 99 for a canary");
  }
  if (rollout.canary_healthy_seconds < 0) {
    fields.Fail(fields.Path("canary_healthy_seconds"), "must not be negative");
  }
  if (fields.Find("analysis") != nullptr) {
    Fields read = fields.Nested("analysis");
    rollout.analysis = ReadAnalysis(read);
    if (rollout.strategy != RolloutStrategy::kCanary) {
      fields.Fail(fields.Path("analysis"), "is for canary rollouts only");
    }
  }
  return rollout;
}

// Counts and figures a device reports: never negative, and within what a
// device can measure (the hub stores and charts them).
HeartbeatMetrics ReadMetrics(Fields& fields, Status& error) {
  HeartbeatMetrics metrics;
  const auto count = [&](Fields& from, std::string_view key) {
    const int64_t value = from.Int(key);
    if (value < 0) {
      from.Fail(from.Path(key), "must not be negative");
    }
    return value;
  };
  const auto figure = [&](Fields& from, std::string_view key, double most) {
    const double value = from.Number(key);
    if (!(value >= 0 && value <= most)) {
      from.Fail(from.Path(key),
                "must be between 0 and " + std::to_string(static_cast<int64_t>(most)));
    }
    return value;
  };
  metrics.interval_seconds = count(fields, "interval_seconds");
  fields.ForEach("models", false, [&](Fields& model) {
    ModelMetrics read;
    read.name = model.String("name", true);
    if (!read.name.empty() && !IsValidModelName(read.name)) {
      model.Fail(model.Path("name"),
                 "is not a model name: 1 to 128 of letters, digits, '.', '_', '-'");
    }
    read.version = count(model, "version");
    read.requests = count(model, "requests");
    read.failures = count(model, "failures");
    read.p50_ms = figure(model, "p50_ms", 1e9);
    read.p99_ms = figure(model, "p99_ms", 1e9);
    if (read.failures > read.requests) {
      model.Fail(model.Path("failures"), "must not exceed requests");
    }
    metrics.models.push_back(std::move(read));
  });
  if (metrics.models.size() > 1000) {
    fields.Fail(fields.Path("models"), "at most 1000 models");
  }
  Fields vitals(fields.Object("vitals"), fields.Path("vitals"), error);
  metrics.vitals.cpu_percent = figure(vitals, "cpu_percent", 100);
  metrics.vitals.memory_used_bytes = count(vitals, "memory_used_bytes");
  metrics.vitals.memory_total_bytes = count(vitals, "memory_total_bytes");
  metrics.vitals.disk_used_bytes = count(vitals, "disk_used_bytes");
  metrics.vitals.disk_total_bytes = count(vitals, "disk_total_bytes");
  if (vitals.Find("temperature_celsius") != nullptr) {
    const double celsius = vitals.Number("temperature_celsius");
    if (!(celsius >= -100 && celsius <= 300)) {
      vitals.Fail(vitals.Path("temperature_celsius"), "must be between -100 and 300");
    }
    metrics.vitals.temperature_celsius = celsius;
  }
  return metrics;
}

// The states SignatureState names; anything else is refused, so what the
// dashboard shows is one of them.
SignatureState ReadSignatureState(Fields&& fields) {
  SignatureState signature{.state = fields.String("state", true),
                           .key = fields.String("key"),
                           .key_sha256 = fields.String("key_sha256")};
  static constexpr std::string_view kStates[] = {"verified", "signed", "unsigned", "refused"};
  if (std::find(std::begin(kStates), std::end(kStates), signature.state) == std::end(kStates)) {
    fields.Fail(fields.Path("state"), "must be verified, signed, unsigned or refused");
  }
  if (signature.key.size() > 256 || signature.key_sha256.size() > 64) {
    fields.Fail(fields.Path("key"), "a key file name of at most 256 characters and its sha256");
  }
  return signature;
}

Heartbeat ReadHeartbeat(Fields& fields, Status& error) {
  Heartbeat heartbeat;
  fields.ForEach("models", false, [&](Fields& model) {
    heartbeat.models.push_back(ModelReport{
        .name = model.String("name", true),
        .version = model.Int("version"),
        .reference = model.String("reference"),
        .digest = model.String("digest"),
        .state = model.String("state"),
        .error = model.String("error"),
    });
    if (const json* signature = model.Find("signature")) {
      heartbeat.models.back().signature =
          ReadSignatureState(Fields(*signature, model.Path("signature"), error));
    }
  });
  heartbeat.errors = fields.Strings("errors");
  heartbeat.load = fields.Number("load");
  heartbeat.memory_available_bytes = fields.Int("memory_available_bytes");
  heartbeat.outbox_depth = fields.Int("outbox_depth");
  heartbeat.last_inference_at = fields.Int("last_inference_at");
  heartbeat.applied_etag = fields.String("applied_etag");
  heartbeat.bundle_generation = fields.Int("bundle_generation");
  heartbeat.advertise_url = fields.String("advertise_url");
  heartbeat.grpc_address = fields.String("grpc_address");
  heartbeat.blobs = fields.Strings("blobs");
  if (const json* metrics = fields.Find("metrics")) {
    Fields metrics_fields(*metrics, fields.Path("metrics"), error);
    heartbeat.metrics = ReadMetrics(metrics_fields, error);
  }
  if (const json* facts = fields.Find("facts")) {
    DeviceFacts read;
    if (ReadFacts(fields, "facts", ParseDeviceFacts(facts->dump()), read)) {
      heartbeat.facts = std::move(read);
    }
  }
  return heartbeat;
}

Device ReadDevice(Fields& fields, Status& error) {
  Device device;
  device.name = fields.String("name", true);
  device.location = fields.String("location");
  device.labels = fields.LabelMap("labels");
  device.architecture = fields.String("architecture");
  device.perch_version = fields.String("perch_version");
  device.addresses = fields.Strings("addresses");
  device.enrolled_at = fields.Int("enrolled_at");
  device.last_seen = fields.Int("last_seen");
  device.revoked = fields.Bool("revoked");
  device.revoked_at = fields.Int("revoked_at");
  if (const json* facts = fields.Find("facts")) {
    ReadFacts(fields, "facts", ParseDeviceFacts(facts->dump()), device.facts);
  }
  if (const json* heartbeat = fields.Find("heartbeat")) {
    Fields heartbeat_fields(*heartbeat, fields.Path("heartbeat"), error);
    device.heartbeat = ReadHeartbeat(heartbeat_fields, error);
  }
  return device;
}

int64_t ReadReplicas(Fields& fields) {
  const int64_t replicas = fields.Int("replicas", 0);
  if (replicas < 0 || replicas > kMaxReplicas) {
    fields.Fail(fields.Path("replicas"),
                "must be between 0 (every matching device) and " + std::to_string(kMaxReplicas));
  }
  return replicas;
}

Deployment ReadDeployment(Fields& fields, Status& error) {
  Deployment deployment;
  deployment.name = fields.String("name", true);
  fields.ForEach("revisions", true, [&](Fields& revision) {
    Revision parsed;
    parsed.number = revision.Int("revision");
    parsed.reference = revision.String("reference", true);
    Fields selector(revision.Object("selector"), revision.Path("selector"), error);
    parsed.selector = ReadSelector(selector);
    Fields rollout(revision.Object("rollout"), revision.Path("rollout"), error);
    parsed.rollout = ReadRollout(rollout);
    parsed.created_at = revision.Int("created_at");
    parsed.rolled_back = revision.Bool("rolled_back");
    parsed.rolled_back_at = revision.Int("rolled_back_at");
    parsed.promoted = revision.Bool("promoted");
    if (revision.Find("healthy_since") != nullptr) {
      parsed.healthy_since = revision.Int("healthy_since");
    }
    parsed.replicas = ReadReplicas(revision);
    revision.ForEach("verdicts", false, [&](Fields& verdict) {
      parsed.verdicts.push_back(ReadVerdict(verdict, error));
    });
    deployment.revisions.push_back(std::move(parsed));
  });
  fields.ForEach("placements", false, [&](Fields& placement) {
    deployment.placements.push_back(Placement{.location = placement.String("location", true),
                                              .devices = placement.Strings("devices"),
                                              .replicas = placement.Int("replicas")});
  });
  return deployment;
}

// Parses `text` as one object, its fields named from `path`, with `read`.
template <typename Read>
auto ParseObject(std::string_view text, const std::string& path, Read read)
    -> Result<decltype(read(std::declval<Fields&>(), std::declval<Status&>()))> {
  Status error;
  const json parsed = Parse(text, error);
  Fields fields(parsed, path, error);
  auto value = read(fields, error);
  return Finish(std::move(value), error);
}

template <typename T, typename Read>
Result<std::vector<T>> ParseArray(std::string_view text, Read read) {
  Status error;
  const json parsed = Parse(text, error);
  if (!error.ok()) {
    return error;
  }
  if (!parsed.is_array()) {
    return InvalidArgument("the body must be a JSON array");
  }
  std::vector<T> items;
  for (size_t i = 0; i < parsed.size() && error.ok(); ++i) {
    Fields fields(parsed[i], "[" + std::to_string(i) + "]", error);
    items.push_back(read(fields, error));
  }
  return Finish(std::move(items), error);
}

}  // namespace

std::string ToJson(const Labels& labels) { return LabelsJson(labels).dump(); }

std::string ToJson(const Location& location) { return LocationJson(location).dump(); }

std::string ToJson(const Device& device) { return DeviceJson(device).dump(); }
std::string ToJson(const Heartbeat& heartbeat) { return HeartbeatJson(heartbeat).dump(); }
std::string ToJson(const Selector& selector) { return SelectorJson(selector).dump(); }
std::string ToJson(const Rollout& rollout) { return RolloutJson(rollout).dump(); }
std::string ToJson(const Revision& revision) { return RevisionJson(revision).dump(); }

std::string ToJson(const Deployment& deployment) { return DeploymentJson(deployment).dump(); }
std::string ToJson(const CanaryVerdict& verdict) { return VerdictJson(verdict).dump(); }

std::string ToJson(const WithToken<Location>& created) {
  return json{{"location", LocationJson(created.value)}, {"enrolment_token", created.token}}.dump();
}

std::string ToJson(const WithToken<Device>& enrolled) {
  return json{{"device", DeviceJson(enrolled.value)}, {"token", enrolled.token}}.dump();
}

std::string ToJson(const DeployOutcome& outcome) {
  return json{{"deployment", DeploymentJson(outcome.deployment)}, {"warnings", outcome.warnings}}
      .dump();
}

std::string ToJson(const FleetStatus& status) {
  json devices = json::array();
  for (const Device& device : status.devices) {
    devices.push_back(DeviceJson(device));
  }
  return json{{"now", status.now}, {"devices", devices}}.dump();
}

std::string ToJson(const std::vector<FleetEvent>& events) {
  json list = json::array();
  for (const FleetEvent& event : events) {
    list.push_back(EventJson(event));
  }
  return list.dump();
}

std::string ToJson(const LocationPeers& peers) {
  json list = json::array();
  for (const LocationPeer& peer : peers.peers) {
    list.push_back({{"device", peer.device},
                    {"url", peer.url},
                    {"grpc_address", peer.grpc_address},
                    {"models", peer.models},
                    {"blobs", peer.blobs},
                    {"last_seen", peer.last_seen}});
  }
  return json{{"location", peers.location}, {"peer_token", peers.peer_token}, {"peers", list}}
      .dump();
}

std::string ToJson(const DesiredState& state) {
  json models = json::array();
  for (const DesiredModel& model : state.models) {
    json item = {{"deployment", model.deployment},
                 {"revision", model.revision},
                 {"reference", model.reference}};
    // Only when set, so that the etags of states without it stay as they were.
    if (model.require_signature) {
      item["require_signature"] = true;
    }
    models.push_back(std::move(item));
  }
  return json{{"etag", state.etag}, {"models", models}}.dump();
}

std::string ToJson(const LocationSpec& spec) {
  return json{
      {"name", spec.name}, {"description", spec.description}, {"labels", LabelsJson(spec.labels)}}
      .dump();
}

std::string ToJson(const DeviceSpec& spec) {
  json body{{"name", spec.name},
            {"labels", LabelsJson(spec.labels)},
            {"architecture", spec.architecture},
            {"perch_version", spec.perch_version},
            {"addresses", spec.addresses},
            {"facts", json::parse(ToJson(spec.facts))}};
  if (!spec.enrolment_key.empty()) {
    body["enrolment_key"] = spec.enrolment_key;
  }
  return body.dump();
}

std::string ToJson(const DeploymentSpec& spec) {
  return json{{"name", spec.name},
              {"reference", spec.reference},
              {"selector", SelectorJson(spec.selector)},
              {"rollout", RolloutJson(spec.rollout)},
              {"replicas", spec.replicas}}
      .dump();
}

std::string ToJson(const std::vector<std::string>& strings) { return json(strings).dump(); }

std::string JsonArray(const std::vector<std::string>& encoded) {
  std::string out = "[";
  for (size_t i = 0; i < encoded.size(); ++i) {
    out += (i == 0 ? "" : ",") + encoded[i];
  }
  return out + "]";
}

Result<Labels> ParseLabels(std::string_view text) {
  Status error;
  const json parsed = Parse(text, error);
  const json wrapper = {{"labels", parsed}};
  Fields fields(wrapper, "", error);
  return Finish(fields.LabelMap("labels"), error);
}

Result<std::vector<std::string>> ParseStrings(std::string_view text) {
  Status error;
  const json parsed = Parse(text, error);
  const json wrapper = {{"strings", parsed}};
  Fields fields(wrapper, "", error);
  return Finish(fields.Strings("strings"), error);
}

Result<LocationSpec> ParseLocationSpec(std::string_view text) {
  return ParseObject(text, "", [](Fields& fields, Status&) {
    LocationSpec spec;
    spec.name = fields.String("name", true);
    CheckName(fields, "name", spec.name);
    spec.description = fields.String("description");
    spec.labels = fields.LabelMap("labels");
    return spec;
  });
}

Result<DeviceSpec> ParseDeviceSpec(std::string_view text) {
  return ParseObject(text, "", [](Fields& fields, Status&) {
    DeviceSpec spec;
    spec.name = fields.String("name", true);
    CheckName(fields, "name", spec.name);
    spec.labels = fields.LabelMap("labels");
    spec.architecture = fields.String("architecture");
    spec.perch_version = fields.String("perch_version");
    spec.addresses = fields.Strings("addresses");
    if (const json* facts = fields.Find("facts")) {
      ReadFacts(fields, "facts", ParseDeviceFacts(facts->dump()), spec.facts);
    }
    // Absent: an agent before enrolment keys. Present, it must be one: an
    // empty key would make every key-less repeat look like the same agent.
    // (Fail keeps the first problem: a number is "must be a string".)
    if (fields.Find("enrolment_key") != nullptr) {
      spec.enrolment_key = fields.String("enrolment_key");
      if (!IsValidEnrolmentKey(spec.enrolment_key)) {
        fields.Fail(fields.Path("enrolment_key"), kEnrolmentKeyRule);
      }
    }
    return spec;
  });
}

Result<DeploymentSpec> ParseDeploymentSpec(std::string_view text) {
  return ParseObject(text, "", [](Fields& fields, Status& error) {
    DeploymentSpec spec;
    spec.name = fields.String("name", true);
    CheckName(fields, "name", spec.name);
    spec.reference = fields.String("reference", true);
    Fields selector(fields.Object("selector"), "selector", error);
    spec.selector = ReadSelector(selector);
    Fields rollout(fields.Object("rollout"), "rollout", error);
    spec.rollout = ReadRollout(rollout);
    spec.replicas = ReadReplicas(fields);
    return spec;
  });
}

Result<Heartbeat> ParseHeartbeat(std::string_view text) {
  return ParseObject(text, "", ReadHeartbeat);
}

Result<Selector> ParseSelector(std::string_view text) {
  return ParseObject(text, "selector",
                     [](Fields& fields, Status&) { return ReadSelector(fields); });
}

Result<Rollout> ParseRollout(std::string_view text) {
  return ParseObject(text, "rollout", [](Fields& fields, Status&) { return ReadRollout(fields); });
}

Result<CanaryVerdict> ParseCanaryVerdict(std::string_view text) {
  return ParseObject(text, "", ReadVerdict);
}

Result<Location> ParseLocation(std::string_view text) {
  return ParseObject(text, "", ReadLocation);
}

Result<Device> ParseDevice(std::string_view text) { return ParseObject(text, "", ReadDevice); }

Result<Deployment> ParseDeployment(std::string_view text) {
  return ParseObject(text, "", ReadDeployment);
}

Result<DesiredState> ParseDesiredState(std::string_view text) {
  return ParseObject(text, "", [](Fields& fields, Status&) {
    DesiredState state;
    state.etag = fields.String("etag", true);
    fields.ForEach("models", false, [&](Fields& model) {
      state.models.push_back(DesiredModel{
          .deployment = model.String("deployment", true),
          .revision = model.Int("revision"),
          .reference = model.String("reference", true),
          .require_signature = model.Bool("require_signature"),
      });
    });
    return state;
  });
}

Result<std::vector<Location>> ParseLocations(std::string_view text) {
  return ParseArray<Location>(text, ReadLocation);
}

Result<std::vector<Device>> ParseDevices(std::string_view text) {
  return ParseArray<Device>(text, ReadDevice);
}

Result<std::vector<Deployment>> ParseDeployments(std::string_view text) {
  return ParseArray<Deployment>(text, ReadDeployment);
}

Result<WithToken<Location>> ParseCreatedLocation(std::string_view text) {
  return ParseObject(text, "", [](Fields& fields, Status& error) {
    WithToken<Location> created;
    created.token = fields.String("enrolment_token", true);
    Fields location(fields.Object("location"), "location", error);
    created.value = ReadLocation(location, error);
    return created;
  });
}

Result<WithToken<Device>> ParseEnrolment(std::string_view text) {
  return ParseObject(text, "", [](Fields& fields, Status& error) {
    WithToken<Device> enrolled;
    enrolled.token = fields.String("token", true);
    Fields device(fields.Object("device"), "device", error);
    enrolled.value = ReadDevice(device, error);
    return enrolled;
  });
}

Result<DeployOutcome> ParseDeployOutcome(std::string_view text) {
  return ParseObject(text, "", [](Fields& fields, Status& error) {
    DeployOutcome outcome;
    outcome.warnings = fields.Strings("warnings");
    Fields deployment(fields.Object("deployment"), "deployment", error);
    outcome.deployment = ReadDeployment(deployment, error);
    return outcome;
  });
}

Result<LocationPeers> ParseLocationPeers(std::string_view text) {
  return ParseObject(text, "", [](Fields& fields, Status&) {
    LocationPeers peers;
    peers.location = fields.String("location");
    peers.peer_token = fields.String("peer_token");
    fields.ForEach("peers", true, [&](Fields& peer) {
      peers.peers.push_back(LocationPeer{.device = peer.String("device", true),
                                         .url = peer.String("url"),
                                         .grpc_address = peer.String("grpc_address"),
                                         .models = peer.Strings("models"),
                                         .blobs = peer.Strings("blobs"),
                                         .last_seen = peer.Int("last_seen")});
    });
    return peers;
  });
}

Result<FleetStatus> ParseFleetStatus(std::string_view text) {
  return ParseObject(text, "", [](Fields& fields, Status& error) {
    FleetStatus status;
    status.now = fields.Int("now");
    fields.ForEach("devices", true,
                   [&](Fields& device) { status.devices.push_back(ReadDevice(device, error)); });
    return status;
  });
}

}  // namespace perch
