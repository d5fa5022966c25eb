#include "cli/pulled_models.h"

#include <fmt/format.h>

#include <map>
#include <memory>

#include "store/model_puller.h"
#include "store/reference.h"

namespace perch::cli {

Status CheckModelReferences(const std::vector<std::string>& references) {
  for (const auto& text : references) {
    if (auto reference = Reference::Parse(text); !reference.ok()) {
      return InvalidArgument(fmt::format("--model {}: {}", text, reference.status().message()));
    }
  }
  return Status::Ok();
}

Result<std::filesystem::path> PrepareModels(const std::vector<std::string>& references,
                                            const std::filesystem::path& state,
                                            const RegistryFlags& flags, const Logger& logger) {
  PERCH_RETURN_IF_ERROR(CheckModelReferences(references));
  PERCH_ASSIGN_OR_RETURN(auto puller, ModelPuller::Open(state));
  std::map<std::string, std::unique_ptr<RegistryClient>> clients;  // by registry
  std::map<std::string, int64_t> served;                           // model -> version
  std::map<std::string, std::string> served_by;                    // model -> reference
  for (const auto& text : references) {
    const Reference reference = Reference::Parse(text).value();
    auto& client = clients[reference.registry];
    if (!client) {
      PERCH_ASSIGN_OR_RETURN(client, MakeRegistryClient(reference.registry, flags));
    }
    auto synced = puller->Sync(*client, reference);
    if (!synced.ok()) {
      return Status(synced.status().code(),
                    fmt::format("cannot serve --model {}: {}", text, synced.status().message()));
    }
    const PulledRecord& record = synced->record;
    for (const std::string& note : synced->signature_notes) {
      logger.Warn("--model {}: {}", text, note);
    }
    if (synced->from_cache) {
      logger.Warn(
          "--model {}: {}; serving the cached {} (model '{}' version {}, pulled {}) instead", text,
          synced->registry_status.message(), record.digest.str(), record.model, record.version,
          record.pulled_at);
    } else {
      logger.Info("--model {} resolved to {}: model '{}' version {}{}", text, record.digest.str(),
                  record.model, record.version,
                  synced->installed ? " (installed)" : " (already installed)");
    }
    if (const auto other = served_by.find(record.model); other != served_by.end()) {
      return InvalidArgument(
          fmt::format("--model {} and --model {} both hold model '{}'; one "
                      "model name can be served from one reference only",
                      other->second, text, record.model));
    }
    served[record.model] = record.version;
    served_by[record.model] = text;
    // A pipeline's step models are served beside it; another reference
    // may name the same model only in the same version.
    for (const SyncOutcome& step : synced->steps) {
      const auto [version, inserted] = served.emplace(step.record.model, step.record.version);
      if (!inserted && version->second != step.record.version) {
        return InvalidArgument(fmt::format(
            "--model {} pins model '{}' version {} as a step, but version {} is served too; one "
            "model name is served in one version only",
            text, step.record.model, step.record.version, version->second));
      }
    }
  }
  PERCH_RETURN_IF_ERROR(puller->Prune(served));
  return puller->models_folder();
}

}  // namespace perch::cli
