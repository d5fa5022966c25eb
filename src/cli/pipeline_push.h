// `perch push` of a pipeline folder (docs/model-store.md, "Pipelines"): each
// step model, read from the folder beside the pipeline's, is pushed to the
// repository beside the pipeline's, and the pipeline is pushed last with
// every step pinned to the manifest digest just pushed.
#pragma once

#include <filesystem>
#include <string>

#include "cli/local_model.h"
#include "core/status.h"
#include "engine/engine.h"
#include "store/model_pusher.h"
#include "store/reference.h"
#include "store/registry_client.h"

namespace perch::cli {

// True when `path` is a model folder whose model.json is of kind pipeline.
bool IsPipelineFolder(const std::filesystem::path& path);

// Attaches the folder's model.sig, when it has one, to the manifest just
// pushed, and prints its digest. InvalidArgument for a bundle too large.
Status AttachFolderSignature(RegistryClient& client, const std::string& repository,
                             const LocalModel& model, const PushOutcome& pushed);

struct PipelinePush {
  std::filesystem::path folder;  // the pipeline's model folder
  Reference reference;           // where the pipeline goes (a tag)
  std::string name;              // "" = the folder's name
  int64_t version = 1;
  std::string mount_from;
};

// Pushes the steps, then the pipeline, printing one line per model and the
// pipeline's digest. Errors name the step whose model could not be read or
// pushed.
Status PushPipelineFolder(const PipelinePush& push, RegistryClient& client, Engine& engine);

}  // namespace perch::cli
