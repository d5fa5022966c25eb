#include "mqtt/stream_bindings.h"

#include <mosquitto.h>

namespace perch::mqtt {

std::optional<BindingChanges> StreamBindings::Refresh(const ModelManager& models) {
  std::map<std::string, StreamBinding> bindings;
  std::vector<std::string> names;
  for (const auto& model : models.ServedModels()) {
    names.push_back(model->name());
    if (model->config().mqtt) {
      bindings[model->config().mqtt->input_topic] =
          StreamBinding{model->name(), model->config().mqtt->output_topic};
    }
  }
  if (bindings == bindings_ && names == model_names_) {
    return std::nullopt;
  }
  BindingChanges changes;
  for (const auto& [filter, binding] : bindings_) {
    if (!bindings.contains(filter)) {
      changes.unsubscribe.push_back(filter);
    }
  }
  for (const auto& [filter, binding] : bindings) {
    if (!bindings_.contains(filter)) {
      changes.subscribe.push_back(filter);
    }
  }
  bindings_ = std::move(bindings);
  model_names_ = std::move(names);
  return changes;
}

std::optional<StreamBinding> StreamBindings::Find(const std::string& topic) const {
  for (const auto& [filter, binding] : bindings_) {
    bool matches = false;
    if (mosquitto_topic_matches_sub(filter.c_str(), topic.c_str(), &matches) == MOSQ_ERR_SUCCESS &&
        matches) {
      return binding;
    }
  }
  return std::nullopt;
}

std::vector<std::string> StreamBindings::Filters() const {
  std::vector<std::string> filters;
  for (const auto& [filter, binding] : bindings_) {
    filters.push_back(filter);
  }
  return filters;
}

}  // namespace perch::mqtt
