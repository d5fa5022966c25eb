#include "models/inference_service.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <set>

namespace perch {
namespace {

using Clock = std::chrono::steady_clock;

Status CheckShape(const TensorSpec& spec, int64_t max_batch_size, const Tensor& input) {
  if (input.shape.size() != spec.shape.size()) {
    return InvalidArgument(
        fmt::format("input '{}' has shape {} of rank {} but the model expects "
                    "rank {} ({})",
                    input.name, ShapeToString(input.shape), input.shape.size(), spec.shape.size(),
                    ShapeToString(spec.shape)));
  }
  for (size_t i = 0; i < spec.shape.size(); ++i) {
    if (spec.shape[i] >= 0 && input.shape[i] != spec.shape[i]) {
      return InvalidArgument(fmt::format("input '{}' has shape {} but the model expects {}",
                                         input.name, ShapeToString(input.shape),
                                         ShapeToString(spec.shape)));
    }
  }
  if (max_batch_size > 0 && !input.shape.empty() && input.shape[0] > max_batch_size) {
    return InvalidArgument(
        fmt::format("input '{}' has a batch of {}, over the model's "
                    "max_batch_size of {}",
                    input.name, input.shape[0], max_batch_size));
  }
  return Status::Ok();
}

}  // namespace

Status ValidateInputs(const ModelSignature& signature, int64_t max_batch_size,
                      const std::vector<Tensor>& inputs) {
  std::set<std::string_view> seen;
  for (const Tensor& input : inputs) {
    if (!seen.insert(input.name).second) {
      return InvalidArgument(fmt::format("input '{}' is given more than once", input.name));
    }
    const auto spec = std::find_if(signature.inputs.begin(), signature.inputs.end(),
                                   [&](const TensorSpec& s) { return s.name == input.name; });
    if (spec == signature.inputs.end()) {
      std::vector<std::string_view> names;
      for (const auto& s : signature.inputs) {
        names.push_back(s.name);
      }
      return InvalidArgument(fmt::format("the model has no input '{}'; its inputs are: {}",
                                         input.name, fmt::join(names, ", ")));
    }
    if (input.datatype != spec->datatype) {
      return InvalidArgument(fmt::format("input '{}' is {} but the model expects {}", input.name,
                                         ToString(input.datatype), ToString(spec->datatype)));
    }
    PERCH_RETURN_IF_ERROR(CheckShape(*spec, max_batch_size, input));
    PERCH_RETURN_IF_ERROR(ValidateTensorData(input));
  }
  for (const auto& spec : signature.inputs) {
    if (!seen.contains(spec.name)) {
      return InvalidArgument(fmt::format("input '{}' ({} {}) is missing", spec.name,
                                         ToString(spec.datatype), ShapeToString(spec.shape)));
    }
  }
  return Status::Ok();
}

Result<std::vector<std::string>> ResolveOutputs(const ModelSignature& signature,
                                                const std::vector<std::string>& requested) {
  std::vector<std::string> names;
  if (requested.empty()) {
    for (const auto& spec : signature.outputs) {
      names.push_back(spec.name);
    }
    return names;
  }
  for (const auto& name : requested) {
    const bool known = std::any_of(signature.outputs.begin(), signature.outputs.end(),
                                   [&](const TensorSpec& s) { return s.name == name; });
    if (!known) {
      return InvalidArgument(fmt::format("the model has no output '{}'", name));
    }
    if (std::find(names.begin(), names.end(), name) != names.end()) {
      return InvalidArgument(fmt::format("output '{}' is requested more than once", name));
    }
    names.push_back(name);
  }
  return names;
}

void InferenceService::RecordUndecodable(std::string_view model_name,
                                         std::string_view model_version) const {
  const auto model = models_.Acquire(model_name, model_version);
  if (model.ok()) {
    (*model)->requests.Increment();
    (*model)->failures.Increment();
  }
}

bool InferenceService::RunsAtOnce(std::string_view model_name,
                                  std::string_view model_version) const {
  const auto model = models_.Resident(model_name, model_version);
  return model != nullptr && scheduler_.RunsAtOnce(*model);
}

Result<InferResponse> InferenceService::Infer(InferRequest request) const {
  const auto received = Clock::now();
  // Timeouts past a year mean "none": adding them to the clock could overflow.
  std::optional<Clock::time_point> deadline;
  if (request.timeout.count() > 0 && request.timeout < std::chrono::hours(24 * 365)) {
    deadline = received + request.timeout;
  }
  // A version out of memory (--memory-limit) loads first, within the deadline.
  PERCH_ASSIGN_OR_RETURN(const auto model,
                         models_.Acquire(request.model_name, request.model_version, deadline));
  model->requests.Increment();
  const auto run = [&]() -> Result<InferResponse> {
    const ModelSignature& signature = model->signature();
    PERCH_RETURN_IF_ERROR(
        ValidateInputs(signature, model->config().max_batch_size, request.inputs));
    PERCH_ASSIGN_OR_RETURN(auto output_names, ResolveOutputs(signature, request.requested_outputs));
    // Model order, so that requests of one model line up for batching.
    std::vector<Tensor> inputs;
    inputs.reserve(request.inputs.size());
    for (const auto& spec : signature.inputs) {
      auto input = std::find_if(request.inputs.begin(), request.inputs.end(),
                                [&](const Tensor& t) { return t.name == spec.name; });
      inputs.push_back(std::move(*input));
    }
    PERCH_ASSIGN_OR_RETURN(
        auto outputs, scheduler_.Submit(model, std::move(inputs), std::move(output_names), deadline,
                                        std::move(request.parameters)));
    return InferResponse{
        .model_name = model->name(),
        .model_version = std::to_string(model->version()),
        .id = std::move(request.id),
        .outputs = std::move(outputs),
        .artifact_digest = model->artifact_digest(),
    };
  };
  auto response = run();
  if (!response.ok()) {
    model->failures.Increment();
  }
  return response;
}

}  // namespace perch
