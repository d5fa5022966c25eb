#include "models/model_config.h"

#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "core/enum_names.h"
#include "engine/execution_providers.h"

namespace perch {
namespace {

using nlohmann::json;

constexpr EnumNames<VersionPolicy::Kind, 3> kPolicyKindNames{{
    {VersionPolicy::Kind::kLatest, "latest"},
    {VersionPolicy::Kind::kAll, "all"},
    {VersionPolicy::Kind::kSpecific, "specific"},
}};

Status CheckKeys(const json& object, std::string_view where,
                 std::initializer_list<std::string_view> allowed) {
  for (const auto& [key, value] : object.items()) {
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
      return InvalidArgument(fmt::format("{} has unknown key \"{}\"; known keys: {}", where, key,
                                         fmt::join(allowed, ", ")));
    }
  }
  return Status::Ok();
}

Result<int64_t> GetInteger(const json& object, std::string_view key, int64_t min, int64_t max) {
  const json& value = object.at(key);
  if (!value.is_number_integer() || value.get<int64_t>() < min || value.get<int64_t>() > max) {
    return InvalidArgument(fmt::format("\"{}\" must be an integer from {} to {}, not {}", key, min,
                                       max, value.dump()));
  }
  return value.get<int64_t>();
}

Result<VersionPolicy> ParseVersionPolicy(const json& value) {
  if (!value.is_object() || value.size() != 1) {
    return InvalidArgument(
        "\"version_policy\" must be one of {\"latest\": {\"num_versions\": N}}, {\"all\": {}}, "
        "{\"specific\": {\"versions\": [..]}}");
  }
  // Through the object's own iterator: a structured binding into
  // `*value.items().begin()` would refer into a temporary that is gone by
  // the next statement.
  const std::string& kind_name = value.begin().key();
  const json& body = value.begin().value();
  const auto kind = VersionPolicyKindFromString(kind_name);
  if (!kind || !body.is_object()) {
    return InvalidArgument(
        fmt::format("\"version_policy\" kind \"{}\" is unknown; use latest, all "
                    "or specific",
                    kind_name));
  }
  VersionPolicy policy;
  policy.kind = *kind;
  if (*kind == VersionPolicy::Kind::kLatest) {
    PERCH_RETURN_IF_ERROR(CheckKeys(body, "version_policy.latest", {"num_versions"}));
    if (body.contains("num_versions")) {
      PERCH_ASSIGN_OR_RETURN(policy.latest, GetInteger(body, "num_versions", 1, 1 << 20));
    }
  } else if (*kind == VersionPolicy::Kind::kSpecific) {
    PERCH_RETURN_IF_ERROR(CheckKeys(body, "version_policy.specific", {"versions"}));
    const json& versions = body.value("versions", json::array());
    if (!versions.is_array() || versions.empty()) {
      return InvalidArgument("version_policy.specific needs \"versions\", a non-empty array");
    }
    for (const json& version : versions) {
      if (!version.is_number_integer() || version.get<int64_t>() < 1) {
        return InvalidArgument(fmt::format(
            "version_policy.specific lists {}, not a positive integer", version.dump()));
      }
      policy.specific.push_back(version.get<int64_t>());
    }
  } else {
    PERCH_RETURN_IF_ERROR(CheckKeys(body, "version_policy.all", {}));
  }
  return policy;
}

Result<DynamicBatching> ParseDynamicBatching(const json& value, int64_t max_batch_size) {
  if (!value.is_object()) {
    return InvalidArgument("\"dynamic_batching\" must be an object");
  }
  if (max_batch_size <= 0) {
    return InvalidArgument(
        "\"dynamic_batching\" needs \"max_batch_size\" above 0: batches are "
        "merged along dim 0 up to that size");
  }
  PERCH_RETURN_IF_ERROR(
      CheckKeys(value, "dynamic_batching",
                {"preferred_batch_sizes", "max_queue_delay_us", "wait_when_idle"}));
  DynamicBatching batching;
  if (value.contains("max_queue_delay_us")) {
    PERCH_ASSIGN_OR_RETURN(batching.max_queue_delay_us,
                           GetInteger(value, "max_queue_delay_us", 0, 10'000'000));
  }
  if (value.contains("wait_when_idle")) {
    if (!value["wait_when_idle"].is_boolean()) {
      return InvalidArgument(fmt::format("dynamic_batching.wait_when_idle is {}, not true or false",
                                         value["wait_when_idle"].dump()));
    }
    batching.wait_when_idle = value["wait_when_idle"].get<bool>();
  }
  for (const json& size : value.value("preferred_batch_sizes", json::array())) {
    if (!size.is_number_integer() || size.get<int64_t>() < 1 ||
        size.get<int64_t>() > max_batch_size) {
      return InvalidArgument(
          fmt::format("dynamic_batching.preferred_batch_sizes lists {}, not an integer from 1 to "
                      "max_batch_size ({})",
                      size.dump(), max_batch_size));
    }
    batching.preferred_batch_sizes.push_back(size.get<int64_t>());
  }
  return batching;
}

Result<MqttBinding> ParseMqttBinding(const json& value) {
  if (!value.is_object()) {
    return InvalidArgument(
        "\"mqtt\" must be an object such as {\"input_topic\": \"sensors/+/audio\"}");
  }
  PERCH_RETURN_IF_ERROR(CheckKeys(value, "mqtt", {"input_topic", "output_topic"}));
  MqttBinding binding;
  for (const auto& [key, target] : {std::pair{"input_topic", &binding.input_topic},
                                    std::pair{"output_topic", &binding.output_topic}}) {
    if (!value.contains(key)) {
      continue;
    }
    if (!value[key].is_string() || value[key].get<std::string>().empty() ||
        value[key].get<std::string>().size() > 65535) {
      return InvalidArgument(fmt::format("mqtt.{} must be a non-empty topic", key));
    }
    *target = value[key].get<std::string>();
  }
  if (binding.input_topic.empty()) {
    return InvalidArgument("\"mqtt\" needs \"input_topic\", the topic whose messages are requests");
  }
  if (binding.output_topic.find_first_of("+#") != std::string::npos) {
    return InvalidArgument(
        "mqtt.output_topic is where results go: it cannot hold the wildcards + or #");
  }
  return binding;
}

Result<std::vector<TensorOverride>> ParseOverrides(const json& value, std::string_view key) {
  if (!value.is_array()) {
    return InvalidArgument(fmt::format("\"{}\" must be an array of objects", key));
  }
  std::vector<TensorOverride> overrides;
  for (const json& entry : value) {
    const std::string where = fmt::format("an entry of \"{}\"", key);
    if (!entry.is_object() || !entry.contains("name") || !entry["name"].is_string()) {
      return InvalidArgument(fmt::format("{} must be an object with a \"name\"", where));
    }
    PERCH_RETURN_IF_ERROR(CheckKeys(entry, where, {"name", "datatype", "dims"}));
    TensorOverride override{.name = entry["name"].get<std::string>(), .datatype = {}, .dims = {}};
    if (entry.contains("datatype")) {
      const auto datatype = entry["datatype"].is_string()
                                ? DataTypeFromString(entry["datatype"].get<std::string>())
                                : std::nullopt;
      if (!datatype) {
        return InvalidArgument(fmt::format("\"{}\" entry '{}' has an unknown datatype {}", key,
                                           override.name, entry["datatype"].dump()));
      }
      override.datatype = datatype;
    }
    if (entry.contains("dims")) {
      const json& dims = entry["dims"];
      Shape shape;
      for (const json& dim : dims.is_array() ? dims : json::array({nullptr})) {
        if (!dim.is_number_integer() || dim.get<int64_t>() < -1) {
          return InvalidArgument(fmt::format(
              "\"{}\" entry '{}' needs \"dims\" as an array of integers (-1 for any size)", key,
              override.name));
        }
        shape.push_back(dim.get<int64_t>());
      }
      override.dims = std::move(shape);
    }
    overrides.push_back(std::move(override));
  }
  return overrides;
}

// {"input name": [dims...]}, every dim a size from 1 up: the shapes warm-up
// runs use where the model leaves dims dynamic.
Result<std::map<std::string, Shape>> ParseWarmupShapes(const json& value) {
  constexpr int64_t kMaxDim = 1 << 24;
  const auto wrong = [](std::string_view detail) {
    return InvalidArgument(
        fmt::format("\"warmup\".\"shapes\" must map input names to arrays of sizes, such as "
                    "{{\"audio\": [1, 16000]}}: {}",
                    detail));
  };
  if (!value.is_object()) {
    return wrong(fmt::format("got {}", value.dump()));
  }
  std::map<std::string, Shape> shapes;
  for (const auto& [name, dims] : value.items()) {
    if (!dims.is_array() || dims.empty() || dims.size() > 16) {
      return wrong(fmt::format("'{}' has no array of 1 to 16 sizes", name));
    }
    Shape shape;
    for (const json& dim : dims) {
      if (!dim.is_number_integer() || dim.get<int64_t>() < 1 || dim.get<int64_t>() > kMaxDim) {
        return wrong(fmt::format("'{}' has a size that is not an integer from 1 to {}: {}", name,
                                 kMaxDim, dim.dump()));
      }
      shape.push_back(dim.get<int64_t>());
    }
    shapes.emplace(name, std::move(shape));
  }
  return shapes;
}

Result<std::vector<TensorSpec>> ApplyTo(const std::vector<TensorSpec>& specs,
                                        const std::vector<TensorOverride>& overrides,
                                        std::string_view kind) {
  std::vector<TensorSpec> result = specs;
  for (const auto& override : overrides) {
    auto spec = std::find_if(result.begin(), result.end(),
                             [&](const TensorSpec& s) { return s.name == override.name; });
    if (spec == result.end()) {
      return InvalidArgument(fmt::format(
          "model.json overrides {} '{}', which the model does not have", kind, override.name));
    }
    if (override.datatype && *override.datatype != spec->datatype) {
      return InvalidArgument(fmt::format("model.json says {} '{}' is {} but the model has {}", kind,
                                         override.name, ToString(*override.datatype),
                                         ToString(spec->datatype)));
    }
    if (override.dims) {
      const Shape& dims = *override.dims;
      if (!ShapeFits(spec->shape, dims)) {
        return InvalidArgument(fmt::format("model.json gives {} '{}' dims {} but the model has {}",
                                           kind, override.name, ShapeToString(dims),
                                           ShapeToString(spec->shape)));
      }
      spec->shape = dims;
    }
  }
  return result;
}

Result<std::vector<std::string>> ParseExecutionProviders(const json& value) {
  if (!value.is_array() || value.empty()) {
    return InvalidArgument(
        "\"execution_providers\" must be a non-empty array of names such as [\"cuda\", \"cpu\"]");
  }
  std::vector<std::string> providers;
  for (const json& item : value) {
    if (!item.is_string() || !IsKnownExecutionProvider(item.get<std::string>())) {
      std::vector<std::string_view> names;
      for (const auto& known : KnownExecutionProviders()) {
        names.push_back(known.name);
      }
      return InvalidArgument(fmt::format("\"execution_providers\": {} is not one of {}",
                                         item.dump(), fmt::join(names, ", ")));
    }
    providers.push_back(item.get<std::string>());
  }
  return providers;
}

}  // namespace

std::string_view ToString(VersionPolicy::Kind kind) { return EnumToString(kPolicyKindNames, kind); }

std::optional<VersionPolicy::Kind> VersionPolicyKindFromString(std::string_view name) {
  return EnumFromString(kPolicyKindNames, name);
}

std::vector<int64_t> VersionPolicy::Select(const std::vector<int64_t>& available) const {
  switch (kind) {
    case Kind::kAll:
      return available;
    case Kind::kLatest: {
      const auto keep = std::min<size_t>(available.size(), static_cast<size_t>(latest));
      return {available.end() - static_cast<std::ptrdiff_t>(keep), available.end()};
    }
    case Kind::kSpecific: {
      std::vector<int64_t> selected;
      for (int64_t version : available) {
        if (std::find(specific.begin(), specific.end(), version) != specific.end()) {
          selected.push_back(version);
        }
      }
      return selected;
    }
  }
  return {};
}

Result<ModelConfig> ParseModelConfig(std::string_view text) {
  const json root = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) {
    return InvalidArgument("model.json is not a JSON object");
  }
  ModelConfig config;
  if (root.contains("kind")) {
    const json& kind = root["kind"];
    if (kind != "model" && kind != "pipeline") {
      return InvalidArgument(
          fmt::format("\"kind\" must be \"model\" or \"pipeline\", not {}", kind.dump()));
    }
    if (kind == "pipeline") {
      config.pipeline = std::string(text);
    }
  }
  if (config.pipeline) {
    PERCH_RETURN_IF_ERROR(CheckKeys(root, "model.json",
                                    {"kind", "instances", "max_queue_size", "version_policy",
                                     "inputs", "outputs", "mqtt", "steps", "streams"}));
  } else {
    PERCH_RETURN_IF_ERROR(
        CheckKeys(root, "model.json",
                  {"kind", "max_batch_size", "instances", "max_queue_size", "dynamic_batching",
                   "threads", "version_policy", "inputs", "outputs", "warmup", "mqtt", "runtime",
                   "execution_providers"}));
  }
  if (root.contains("max_batch_size")) {
    PERCH_ASSIGN_OR_RETURN(config.max_batch_size, GetInteger(root, "max_batch_size", 0, 1 << 20));
  }
  if (root.contains("instances")) {
    PERCH_ASSIGN_OR_RETURN(const int64_t instances, GetInteger(root, "instances", 1, 256));
    config.instances = static_cast<int>(instances);
  }
  if (root.contains("max_queue_size")) {
    PERCH_ASSIGN_OR_RETURN(config.max_queue_size, GetInteger(root, "max_queue_size", 1, 1 << 20));
  }
  if (root.contains("dynamic_batching")) {
    PERCH_ASSIGN_OR_RETURN(config.dynamic_batching,
                           ParseDynamicBatching(root["dynamic_batching"], config.max_batch_size));
  }
  if (root.contains("threads")) {
    PERCH_ASSIGN_OR_RETURN(const int64_t threads, GetInteger(root, "threads", 0, 1024));
    config.threads = static_cast<int>(threads);
  }
  if (root.contains("version_policy")) {
    PERCH_ASSIGN_OR_RETURN(config.version_policy, ParseVersionPolicy(root["version_policy"]));
  }
  if (root.contains("inputs")) {
    PERCH_ASSIGN_OR_RETURN(config.inputs, ParseOverrides(root["inputs"], "inputs"));
  }
  if (root.contains("outputs")) {
    PERCH_ASSIGN_OR_RETURN(config.outputs, ParseOverrides(root["outputs"], "outputs"));
  }
  if (root.contains("mqtt")) {
    PERCH_ASSIGN_OR_RETURN(config.mqtt, ParseMqttBinding(root["mqtt"]));
  }
  if (root.contains("runtime")) {
    PERCH_ASSIGN_OR_RETURN(config.runtime, ParseRuntimeSpec(root["runtime"].dump()));
  }
  if (root.contains("execution_providers")) {
    PERCH_ASSIGN_OR_RETURN(config.execution_providers,
                           ParseExecutionProviders(root["execution_providers"]));
  }
  if (root.contains("warmup")) {
    const json& warmup = root["warmup"];
    if (!warmup.is_object()) {
      return InvalidArgument("\"warmup\" must be an object such as {\"runs\": 3}");
    }
    PERCH_RETURN_IF_ERROR(CheckKeys(warmup, "warmup", {"runs", "shapes"}));
    if (warmup.contains("runs")) {
      PERCH_ASSIGN_OR_RETURN(const int64_t runs, GetInteger(warmup, "runs", 0, 1000));
      config.warmup_runs = static_cast<int>(runs);
    }
    if (warmup.contains("shapes")) {
      PERCH_ASSIGN_OR_RETURN(config.warmup_shapes, ParseWarmupShapes(warmup["shapes"]));
    }
  }
  return config;
}

Result<ModelSignature> ApplyOverrides(const ModelSignature& model, const ModelConfig& config) {
  ModelSignature signature;
  PERCH_ASSIGN_OR_RETURN(signature.inputs, ApplyTo(model.inputs, config.inputs, "input"));
  PERCH_ASSIGN_OR_RETURN(signature.outputs, ApplyTo(model.outputs, config.outputs, "output"));
  if (config.max_batch_size > 0) {
    for (const auto& input : signature.inputs) {
      if (input.shape.empty() || input.shape[0] != -1) {
        return InvalidArgument(fmt::format(
            "model.json sets max_batch_size {} but input '{}' has shape {}; batching needs a "
            "dynamic first dim",
            config.max_batch_size, input.name, ShapeToString(input.shape)));
      }
    }
  }
  return signature;
}

}  // namespace perch
