#include "store/pipeline_artifact.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <nlohmann/json.hpp>
#include <optional>

namespace perch {
namespace {

using nlohmann::json;
using nlohmann::ordered_json;

// The string at `key` of `object`; "" when absent, nullopt when it is there
// but not a string (nlohmann's value() would throw).
std::optional<std::string> StringOr(const ordered_json& object, const char* key) {
  const auto found = object.find(key);
  if (found == object.end()) {
    return std::string();
  }
  if (!found->is_string()) {
    return std::nullopt;
  }
  return found->get<std::string>();
}

Result<ordered_json> ParsePipelineJson(std::string_view model_json) {
  ordered_json body = ordered_json::parse(model_json, nullptr, false);
  if (!body.is_object() || StringOr(body, "kind") != std::string(kPipelinePlatform)) {
    return InvalidArgument("the model.json is not of kind \"pipeline\"");
  }
  if (!body.contains("steps") || !body["steps"].is_array()) {
    return InvalidArgument("the pipeline's model.json has no \"steps\" array");
  }
  return body;
}

std::string VersionText(const ordered_json& version) {
  return version.is_string() ? version.get<std::string>() : version.dump();
}

}  // namespace

Result<std::vector<PipelineStepModel>> PipelineStepModels(std::string_view model_json) {
  PERCH_ASSIGN_OR_RETURN(const ordered_json body, ParsePipelineJson(model_json));
  std::vector<PipelineStepModel> models;
  for (const ordered_json& step : body["steps"]) {
    if (!step.is_object() || !step.contains("model")) {
      continue;
    }
    const std::optional<std::string> digest = StringOr(step, "digest");
    if (!step["model"].is_string() || !step.value("name", ordered_json()).is_string() || !digest) {
      return InvalidArgument(
          "a model step needs a string \"name\" and \"model\" (and \"digest\", if any)");
    }
    PipelineStepModel entry{step["model"].get<std::string>(),
                            step.contains("version") ? VersionText(step["version"]) : "",
                            *digest,
                            {step["name"].get<std::string>()}};
    auto same = std::find_if(models.begin(), models.end(),
                             [&](const PipelineStepModel& m) { return m.model == entry.model; });
    if (same == models.end()) {
      models.push_back(std::move(entry));
      continue;
    }
    // One model name is one model folder on the device: every step naming
    // it must mean the same version.
    if (same->version != entry.version || same->digest != entry.digest) {
      return InvalidArgument(
          fmt::format("steps '{}' and '{}' name model '{}' with different versions or digests",
                      same->steps.front(), entry.steps.front(), entry.model));
    }
    same->steps.push_back(entry.steps.front());
  }
  return models;
}

Result<std::vector<TensorInfo>> PipelineTensors(std::string_view model_json, const char* key) {
  PERCH_ASSIGN_OR_RETURN(const ordered_json body, ParsePipelineJson(model_json));
  std::vector<TensorInfo> tensors;
  if (!body.contains(key) || !body[key].is_array()) {
    return InvalidArgument(fmt::format("the pipeline's model.json has no \"{}\" array", key));
  }
  for (const ordered_json& entry : body[key]) {
    if (!entry.is_object() || !entry.value("name", ordered_json()).is_string() ||
        !entry.value("datatype", ordered_json()).is_string() ||
        !entry.value("dims", ordered_json()).is_array()) {
      return InvalidArgument(fmt::format(
          "an entry of the pipeline's \"{}\" needs \"name\", \"datatype\" and \"dims\"", key));
    }
    TensorInfo tensor{entry["name"].get<std::string>(), entry["datatype"].get<std::string>(), {}};
    for (const ordered_json& dim : entry["dims"]) {
      if (!dim.is_number_integer()) {
        return InvalidArgument(
            fmt::format("\"dims\" of pipeline tensor '{}' must be integers", tensor.name));
      }
      tensor.shape.push_back(dim.get<int64_t>());
    }
    tensors.push_back(std::move(tensor));
  }
  return tensors;
}

Result<std::string> PinPipeline(std::string_view model_json,
                                const std::map<std::string, StepPin>& pins) {
  PERCH_ASSIGN_OR_RETURN(ordered_json body, ParsePipelineJson(model_json));
  for (ordered_json& step : body["steps"]) {
    if (!step.is_object() || !step.contains("model") || !step["model"].is_string()) {
      continue;
    }
    const auto pin = pins.find(step["model"].get<std::string>());
    if (pin == pins.end()) {
      return InvalidArgument(
          fmt::format("no digest to pin model '{}' to", step["model"].get<std::string>()));
    }
    step["version"] = std::to_string(pin->second.version);
    step["digest"] = pin->second.digest.str();
  }
  return body.dump();
}

Result<std::string> StepRepository(const std::string& pipeline_repository,
                                   const std::string& model) {
  const size_t slash = pipeline_repository.rfind('/');
  const std::string repository =
      slash == std::string::npos ? model : pipeline_repository.substr(0, slash + 1) + model;
  if (!IsValidRepositoryName(repository)) {
    return InvalidArgument(fmt::format(
        "step model '{}' cannot be stored beside the pipeline: \"{}\" is not a repository name "
        "(lower case letters, digits, '.', '_', '-')",
        model, repository));
  }
  return repository;
}

Result<std::vector<PinnedStep>> PinnedStepsOf(const Reference& pipeline,
                                              const ModelMetadata& metadata) {
  PERCH_ASSIGN_OR_RETURN(const auto models, PipelineStepModels(metadata.model_config_json));
  std::vector<PinnedStep> pinned;
  for (const PipelineStepModel& model : models) {
    const std::string steps = fmt::format("{}", fmt::join(model.steps, ", "));
    if (model.digest.empty()) {
      return InvalidArgument(fmt::format(
          "pipeline '{}': step '{}' (model '{}') is not pinned to a manifest digest; push the "
          "pipeline folder with perch push, which pins its steps",
          metadata.name, model.steps.front(), model.model));
    }
    auto digest = Digest::Parse(model.digest);
    if (!digest.ok()) {
      return InvalidArgument(fmt::format("pipeline '{}': step '{}': digest \"{}\": {}",
                                         metadata.name, model.steps.front(), model.digest,
                                         digest.status().message()));
    }
    int64_t version = 0;
    const char* end = model.version.data() + model.version.size();
    const auto parsed = std::from_chars(model.version.data(), end, version);
    if (parsed.ec != std::errc() || parsed.ptr != end || version < 1) {
      return InvalidArgument(
          fmt::format("pipeline '{}': step '{}' pins model '{}' without a version number",
                      metadata.name, model.steps.front(), model.model));
    }
    PERCH_ASSIGN_OR_RETURN(std::string repository,
                           StepRepository(pipeline.repository, model.model));
    pinned.push_back(
        PinnedStep{model.model, version,
                   Reference{pipeline.registry, std::move(repository), "", digest->str()}, steps});
  }
  return pinned;
}

Status CheckPinnedStep(const PinnedStep& pinned, const std::string& name, int64_t version) {
  if (name != pinned.model || version != pinned.version) {
    return InvalidArgument(
        fmt::format("it holds model '{}' version {}, but the pipeline names model '{}' version {}",
                    name, version, pinned.model, pinned.version));
  }
  return Status::Ok();
}

}  // namespace perch
