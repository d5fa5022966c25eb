// Internal to mqtt/: event streams. A model whose model.json has
// "mqtt": {"input_topic", "output_topic"} answers every message on a topic
// matching input_topic. StreamBindings keeps those bindings, and the names of
// the models served (the status lists them), in step with the ModelManager.
//
// Threading: not thread-safe; one owner. The bridge refreshes and reads it on
// the connection's network thread only (and in Start, before that thread
// runs), so it needs no lock.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "models/model_manager.h"

namespace perch::mqtt {

struct StreamBinding {
  std::string model;
  std::string output_topic;  // empty: the model's results topic

  bool operator==(const StreamBinding&) const = default;
};

// What a refresh changed.
struct BindingChanges {
  std::vector<std::string> subscribe;    // input topics newly bound
  std::vector<std::string> unsubscribe;  // input topics no longer bound
};

class StreamBindings {
 public:
  // Reads the bindings of the models `models` serves. nullopt when neither
  // they nor the set of models changed.
  std::optional<BindingChanges> Refresh(const ModelManager& models);

  // The binding whose input topic (a filter) matches `topic`.
  std::optional<StreamBinding> Find(const std::string& topic) const;

  // Every bound input topic.
  std::vector<std::string> Filters() const;
  const std::vector<std::string>& model_names() const { return model_names_; }

 private:
  std::map<std::string, StreamBinding> bindings_;  // by input topic
  std::vector<std::string> model_names_;
};

}  // namespace perch::mqtt
