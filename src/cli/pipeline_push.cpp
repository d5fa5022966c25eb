#include "cli/pipeline_push.h"

#include <fmt/format.h>

#include <cstdio>
#include <map>

#include "cli/progress.h"
#include "core/files.h"
#include "models/model_config.h"
#include "models/repository.h"
#include "store/media_types.h"
#include "store/pipeline_artifact.h"
#include "store/signature_referrers.h"

namespace perch::cli {
namespace {

namespace fs = std::filesystem;

Result<PushOutcome> PushOne(RegistryClient& client, const std::string& repository,
                            const std::string& tag, const LocalModel& model,
                            const std::string& mount_from) {
  ProgressBar bar(fmt::format("push {}:{}", repository, tag));
  PERCH_ASSIGN_OR_RETURN(
      PushOutcome pushed,
      PushModel(client, repository, tag, model.metadata, model.files, mount_from,
                [&](uint64_t done, uint64_t total) { bar.Update(done, total); }));
  return pushed;
}

}  // namespace

bool IsPipelineFolder(const fs::path& path) {
  std::error_code error;
  const fs::path file = path / "model.json";
  if (!fs::is_directory(path, error) || !fs::is_regular_file(file, error)) {
    return false;
  }
  auto text = ReadFile(file);
  if (!text.ok()) {
    return false;
  }
  auto config = ParseModelConfig(*text);
  return config.ok() && config->pipeline.has_value();
}

Status AttachFolderSignature(RegistryClient& client, const std::string& repository,
                             const LocalModel& model, const PushOutcome& pushed) {
  if (!model.signature) {
    return Status::Ok();
  }
  std::error_code error;
  if (fs::file_size(*model.signature, error) > kMaxSignatureBundleBytes) {
    return InvalidArgument(fmt::format("{} is larger than the {} bytes a signature may be",
                                       model.signature->string(), kMaxSignatureBundleBytes));
  }
  PERCH_ASSIGN_OR_RETURN(const std::string bundle, ReadFile(*model.signature));
  const Descriptor subject{std::string(media_type::kOciManifest), pushed.manifest_digest,
                           pushed.manifest_size};
  auto attached = AttachSignature(client, repository, subject, bundle);
  if (!attached.ok()) {
    return Status(attached.status().code(),
                  fmt::format("the model is pushed, but its signature {} is not: {}",
                              model.signature->string(), attached.status().message()));
  }
  std::printf("signature: %s\n", attached->str().c_str());
  return Status::Ok();
}

Status PushPipelineFolder(const PipelinePush& push, RegistryClient& client, Engine& engine) {
  const fs::path folder = fs::absolute(push.folder).lexically_normal();
  const fs::path clean = folder.filename().empty() ? folder.parent_path() : folder;
  PERCH_ASSIGN_OR_RETURN(const std::string text, ReadFile(clean / "model.json"));
  if (auto config = ParseModelConfig(text); !config.ok()) {
    return InvalidArgument(
        fmt::format("{}: {}", (clean / "model.json").string(), config.status().message()));
  }
  PERCH_ASSIGN_OR_RETURN(const auto step_models, PipelineStepModels(text));
  std::map<std::string, StepPin> pins;
  for (const PipelineStepModel& step : step_models) {
    const auto in_context = [&](const Status& status) {
      return Status(status.code(),
                    fmt::format("step {} (model '{}'): {}", fmt::join(step.steps, ", "), step.model,
                                status.message()));
    };
    std::optional<int64_t> version;
    if (!step.version.empty()) {
      version = ParseModelVersion(step.version);
      if (!version) {
        return in_context(
            InvalidArgument(fmt::format("version \"{}\" is not a version number", step.version)));
      }
    }
    // The step's model is the folder beside the pipeline's, as in the
    // repository that serves it.
    auto model = ReadLocalModel(
        clean.parent_path() / step.model,
        LocalModelOptions{.name = step.model, .default_name = step.model, .version = version},
        engine);
    if (!model.ok()) {
      return in_context(model.status());
    }
    auto repository = StepRepository(push.reference.repository, step.model);
    if (!repository.ok()) {
      return in_context(repository.status());
    }
    const std::string tag = std::to_string(model->metadata.version);
    auto pushed = PushOne(client, *repository, tag, *model, push.mount_from);
    if (!pushed.ok()) {
      return in_context(pushed.status());
    }
    std::printf("step %s: pushed %s version %lld to %s/%s:%s (%s uploaded)\n  pinned %s\n",
                fmt::format("{}", fmt::join(step.steps, ", ")).c_str(), step.model.c_str(),
                static_cast<long long>(model->metadata.version), push.reference.registry.c_str(),
                repository->c_str(), tag.c_str(), HumanBytes(pushed->uploaded_bytes).c_str(),
                pushed->manifest_digest.str().c_str());
    if (Status signed_ = AttachFolderSignature(client, *repository, *model, *pushed);
        !signed_.ok()) {
      return in_context(signed_);
    }
    pins[step.model] = StepPin{model->metadata.version, pushed->manifest_digest};
  }
  ModelMetadata metadata{.name = push.name.empty() ? clean.filename().string() : push.name,
                         .version = push.version,
                         .platform = std::string(kPipelinePlatform),
                         .architectures = {"amd64", "arm64"},
                         .inputs = {},
                         .outputs = {},
                         .model_config_json = ""};
  if (!IsValidModelName(metadata.name)) {
    return InvalidArgument(
        fmt::format("\"{}\" is not a valid model name ([A-Za-z0-9_.-], at most 128); pass --name",
                    metadata.name));
  }
  PERCH_ASSIGN_OR_RETURN(metadata.inputs, PipelineTensors(text, "inputs"));
  PERCH_ASSIGN_OR_RETURN(metadata.outputs, PipelineTensors(text, "outputs"));
  PERCH_ASSIGN_OR_RETURN(metadata.model_config_json, PinPipeline(text, pins));
  PERCH_ASSIGN_OR_RETURN(const PushOutcome pushed,
                         PushOne(client, push.reference.repository, push.reference.tag,
                                 LocalModel{metadata, {}, std::nullopt}, push.mount_from));
  std::printf("pushed pipeline %s version %lld to %s (%zu step models pinned)\ndigest: %s\n",
              metadata.name.c_str(), static_cast<long long>(metadata.version),
              push.reference.ToString().c_str(), pins.size(), pushed.manifest_digest.str().c_str());
  return Status::Ok();
}

}  // namespace perch::cli
