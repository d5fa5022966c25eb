// JSON forms of fleet/device_facts.h.
#include <nlohmann/json.hpp>

#include "fleet/device_facts.h"

namespace perch {
namespace {

using nlohmann::json;

// Reads one field into `out`, or answers what is wrong with it.
Status ReadStrings(const json& object, const char* key, std::vector<std::string>& out) {
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) {
    return Status::Ok();
  }
  if (!it->is_array()) {
    return InvalidArgument(std::string("facts.") + key + ": must be an array of strings");
  }
  for (const json& item : *it) {
    if (!item.is_string()) {
      return InvalidArgument(std::string("facts.") + key + ": must be an array of strings");
    }
    out.push_back(item.get<std::string>());
  }
  return Status::Ok();
}

Status ReadString(const json& object, const char* key, std::string& out) {
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) {
    return Status::Ok();
  }
  if (!it->is_string()) {
    return InvalidArgument(std::string("facts.") + key + ": must be a string");
  }
  out = it->get<std::string>();
  return Status::Ok();
}

Status ReadCount(const json& object, const char* key, int64_t& out) {
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) {
    return Status::Ok();
  }
  if (!it->is_number_integer() || it->get<int64_t>() < 0) {
    return InvalidArgument(std::string("facts.") + key + ": must be an integer, 0 or more");
  }
  out = it->get<int64_t>();
  return Status::Ok();
}

Result<json> ParseObject(std::string_view text) {
  json parsed = json::parse(text, nullptr, false);
  if (parsed.is_discarded() || !parsed.is_object()) {
    return InvalidArgument("facts: must be a JSON object");
  }
  return parsed;
}

}  // namespace

std::string ToJson(const DeviceFacts& facts) {
  return json{{"architecture", facts.architecture},
              {"cpu_model", facts.cpu_model},
              {"cpu_features", facts.cpu_features},
              {"cores", facts.cores},
              {"memory_bytes", facts.memory_bytes},
              {"accelerators", facts.accelerators},
              {"perch_version", facts.perch_version},
              {"onnxruntime_version", facts.onnxruntime_version},
              {"execution_providers", facts.execution_providers}}
      .dump();
}

std::string ToJson(const FactSelector& selector) {
  json out = json::object();
  if (!selector.accelerators.empty()) {
    out["accelerators"] = selector.accelerators;
  }
  if (!selector.cpu_features.empty()) {
    out["cpu_features"] = selector.cpu_features;
  }
  if (selector.min_cores > 0) {
    out["min_cores"] = selector.min_cores;
  }
  if (selector.min_memory_bytes > 0) {
    out["min_memory_bytes"] = selector.min_memory_bytes;
  }
  return out.dump();
}

Result<DeviceFacts> ParseDeviceFacts(std::string_view text) {
  PERCH_ASSIGN_OR_RETURN(const json object, ParseObject(text));
  DeviceFacts facts;
  PERCH_RETURN_IF_ERROR(ReadString(object, "architecture", facts.architecture));
  PERCH_RETURN_IF_ERROR(ReadString(object, "cpu_model", facts.cpu_model));
  PERCH_RETURN_IF_ERROR(ReadStrings(object, "cpu_features", facts.cpu_features));
  PERCH_RETURN_IF_ERROR(ReadCount(object, "cores", facts.cores));
  PERCH_RETURN_IF_ERROR(ReadCount(object, "memory_bytes", facts.memory_bytes));
  PERCH_RETURN_IF_ERROR(ReadStrings(object, "accelerators", facts.accelerators));
  PERCH_RETURN_IF_ERROR(ReadString(object, "perch_version", facts.perch_version));
  PERCH_RETURN_IF_ERROR(ReadString(object, "onnxruntime_version", facts.onnxruntime_version));
  PERCH_RETURN_IF_ERROR(ReadStrings(object, "execution_providers", facts.execution_providers));
  return facts;
}

Result<FactSelector> ParseFactSelector(std::string_view text) {
  PERCH_ASSIGN_OR_RETURN(const json object, ParseObject(text));
  for (const auto& [key, value] : object.items()) {
    if (key != "accelerators" && key != "cpu_features" && key != "min_cores" &&
        key != "min_memory_bytes") {
      return InvalidArgument("facts." + key +
                             ": unknown; a selector's facts are accelerators, cpu_features, "
                             "min_cores and min_memory_bytes");
    }
  }
  FactSelector selector;
  PERCH_RETURN_IF_ERROR(ReadStrings(object, "accelerators", selector.accelerators));
  PERCH_RETURN_IF_ERROR(ReadStrings(object, "cpu_features", selector.cpu_features));
  PERCH_RETURN_IF_ERROR(ReadCount(object, "min_cores", selector.min_cores));
  PERCH_RETURN_IF_ERROR(ReadCount(object, "min_memory_bytes", selector.min_memory_bytes));
  return selector;
}

}  // namespace perch
