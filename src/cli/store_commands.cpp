// The model store client: `perch push / pull / ls / inspect / tag / rm`
// against the hub or any OCI registry (docs/model-store.md).
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "cli/commands.h"
#include "cli/local_model.h"
#include "cli/pipeline_push.h"
#include "cli/progress.h"
#include "cli/registry_flags.h"
#include "core/files.h"
#include "core/log.h"
#include "engine/engine.h"
#include "store/blob_store.h"
#include "store/manifest.h"
#include "store/media_types.h"
#include "store/model_artifact.h"
#include "store/model_puller.h"
#include "store/model_pusher.h"
#include "store/pipeline_artifact.h"
#include "store/reference.h"
#include "store/signature_referrers.h"

namespace perch::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::ordered_json;

// A reference and a client for its registry.
struct Target {
  Reference reference;
  std::unique_ptr<RegistryClient> client;
};

Result<Target> Connect(const std::string& text, const RegistryFlags& flags) {
  PERCH_ASSIGN_OR_RETURN(Reference reference, Reference::Parse(text));
  PERCH_ASSIGN_OR_RETURN(auto client, MakeRegistryClient(reference.registry, flags));
  return Target{std::move(reference), std::move(client)};
}

int Fail(const Status& status) {
  std::fprintf(stderr, "error: %s\n", status.message().c_str());
  return 1;
}

// Where `perch pull` keeps verified blobs and partial downloads, so that a
// pull that was interrupted (even killed) resumes.
std::string DefaultCacheFolder() {
  if (const char* cache = std::getenv("XDG_CACHE_HOME"); cache != nullptr && *cache != '\0') {
    return (fs::path(cache) / "perch" / "blobs").string();
  }
  if (const char* home = std::getenv("HOME"); home != nullptr && *home != '\0') {
    return (fs::path(home) / ".cache" / "perch" / "blobs").string();
  }
  return ".perch-cache/blobs";
}

std::string LastComponent(const std::string& repository) {
  const size_t slash = repository.rfind('/');
  return slash == std::string::npos ? repository : repository.substr(slash + 1);
}

// --- push ---------------------------------------------------------------

struct PushOptions {
  std::string path;
  std::string reference;
  std::string name;
  int64_t version = 0;
  std::string mount_from;
  RegistryFlags registry;
};

int RunPush(const PushOptions& options) {
  auto reference = Reference::Parse(options.reference);
  if (!reference.ok()) {
    return Fail(reference.status());
  }
  if (!reference->digest.empty()) {
    return Fail(
        InvalidArgument("push names a tag (HOST/REPO:TAG), not a digest: the digest is "
                        "what the registry computes"));
  }
  auto engine = CreateOnnxEngine(OnnxEngineOptions{.intra_op_threads = 1},
                                 Logger::ToStderr(LogLevel::kWarn, "engine"));
  if (!engine.ok()) {
    return Fail(engine.status());
  }
  if (IsPipelineFolder(options.path)) {
    auto client = MakeRegistryClient(reference->registry, options.registry);
    if (!client.ok()) {
      return Fail(client.status());
    }
    const Status pushed =
        PushPipelineFolder(PipelinePush{.folder = options.path,
                                        .reference = *reference,
                                        .name = options.name,
                                        .version = std::max<int64_t>(options.version, 1),
                                        .mount_from = options.mount_from},
                           **client, **engine);
    return pushed.ok() ? 0 : Fail(pushed);
  }
  const LocalModelOptions local{
      .name = options.name,
      .default_name = LastComponent(reference->repository),
      .version = options.version > 0 ? std::optional<int64_t>(options.version) : std::nullopt,
  };
  auto model = ReadLocalModel(options.path, local, **engine);
  if (!model.ok()) {
    return Fail(model.status());
  }
  auto client = MakeRegistryClient(reference->registry, options.registry);
  if (!client.ok()) {
    return Fail(client.status());
  }
  ProgressBar bar(fmt::format("push {}", reference->ToString()));
  auto pushed = PushModel(**client, reference->repository, reference->tag, model->metadata,
                          model->files, options.mount_from,
                          [&](uint64_t done, uint64_t total) { bar.Update(done, total); });
  if (!pushed.ok()) {
    return Fail(pushed.status());
  }
  std::printf("pushed %s version %lld to %s (%zu files, %s; %s uploaded)\ndigest: %s\n",
              model->metadata.name.c_str(), static_cast<long long>(model->metadata.version),
              reference->ToString().c_str(), model->files.size(),
              HumanBytes(pushed->total_bytes).c_str(), HumanBytes(pushed->uploaded_bytes).c_str(),
              pushed->manifest_digest.str().c_str());
  if (Status attached = AttachFolderSignature(**client, reference->repository, *model, *pushed);
      !attached.ok()) {
    return Fail(attached);
  }
  return 0;
}

// --- pull ---------------------------------------------------------------

struct PullOptions {
  std::string reference;
  std::string to = ".";
  std::string cache = DefaultCacheFolder();
  RegistryFlags registry;
};

int RunPull(const PullOptions& options) {
  auto reference = Reference::Parse(options.reference);
  if (!reference.ok()) {
    return Fail(reference.status());
  }
  auto blobs = BlobStore::Open(options.cache);
  if (!blobs.ok()) {
    return Fail(blobs.status());
  }
  auto client = MakeRegistryClient(reference->registry, options.registry);
  if (!client.ok()) {
    return Fail(client.status());
  }
  std::optional<FetchedModel> fetched;
  {
    ProgressBar bar(fmt::format("pull {}", reference->ToString()));
    auto result = FetchModel(**client, *reference, **blobs,
                             [&](uint64_t done, uint64_t total) { bar.Update(done, total); });
    if (!result.ok()) {
      return Fail(result.status());
    }
    fetched = std::move(result).value();
  }
  // A pipeline's pinned steps are fetched and installed before it, so a
  // repository served from --to never holds a pipeline without its steps.
  auto steps = FetchPipelineSteps(**client, *reference, *fetched, **blobs);
  if (!steps.ok()) {
    return Fail(steps.status());
  }
  std::vector<PinnedStep> pinned;
  if (!steps->empty()) {
    pinned = PinnedStepsOf(*reference, fetched->metadata).value();  // FetchPipelineSteps read them
  }
  for (size_t i = 0; i < steps->size(); ++i) {
    const FetchedModel& step = (*steps)[i];
    auto step_installed = InstallModel(**blobs, step, options.to, pinned[i].reference.ToString());
    if (!step_installed.ok()) {
      return Fail(step_installed.status());
    }
    std::printf("step model %s version %lld: %s %s\n", step.metadata.name.c_str(),
                static_cast<long long>(step.metadata.version),
                *step_installed ? "pulled" : "already installed", step.digest.str().c_str());
    for (const Digest& signature : step.signatures) {
      std::printf("  signature: %s\n", signature.str().c_str());
    }
  }
  auto installed = InstallModel(**blobs, *fetched, options.to, reference->ToString());
  if (!installed.ok()) {
    return Fail(installed.status());
  }
  uint64_t bytes = 0;
  for (const auto& file : fetched->artifact.files) {
    bytes += file.layer.size;
  }
  const fs::path folder =
      fs::path(options.to) / fetched->metadata.name / std::to_string(fetched->metadata.version);
  std::printf("%s %s version %lld into %s (%zu files, %s)\ndigest: %s\n",
              *installed ? "pulled" : "already installed:", fetched->metadata.name.c_str(),
              static_cast<long long>(fetched->metadata.version), folder.string().c_str(),
              fetched->artifact.files.size(), HumanBytes(bytes).c_str(),
              fetched->digest.str().c_str());
  for (const Digest& signature : fetched->signatures) {
    std::printf("signature: %s\n", signature.str().c_str());
  }
  for (const std::string& note : fetched->signature_notes) {
    std::fprintf(stderr, "warning: %s\n", note.c_str());
  }
  return 0;
}

// --- ls -----------------------------------------------------------------

struct LsOptions {
  std::string target;  // HOST or HOST/REPO
  RegistryFlags registry;
};

int RunLs(const LsOptions& options) {
  const size_t slash = options.target.find('/');
  const std::string host = options.target.substr(0, slash);
  if (!IsValidRegistryHost(host)) {
    return Fail(InvalidArgument(
        fmt::format("\"{}\" is not HOST[:PORT] or HOST[:PORT]/REPOSITORY", options.target)));
  }
  auto client = MakeRegistryClient(host, options.registry);
  if (!client.ok()) {
    return Fail(client.status());
  }
  Result<std::vector<std::string>> names = std::vector<std::string>{};
  if (slash == std::string::npos || slash + 1 == options.target.size()) {
    names = (*client)->Catalog();
  } else {
    const std::string repository = options.target.substr(slash + 1);
    if (!IsValidRepositoryName(repository)) {
      return Fail(InvalidArgument(fmt::format("\"{}\" is not a repository name", repository)));
    }
    names = (*client)->ListTags(repository);
  }
  if (!names.ok()) {
    return Fail(names.status());
  }
  for (const auto& name : *names) {
    std::printf("%s\n", name.c_str());
  }
  return 0;
}

// --- inspect ------------------------------------------------------------

struct InspectOptions {
  std::string reference;
  bool json = false;
  RegistryFlags registry;
};

ordered_json TensorsJson(const std::vector<TensorInfo>& tensors) {
  ordered_json list = ordered_json::array();
  for (const auto& tensor : tensors) {
    list.push_back({{"name", tensor.name}, {"datatype", tensor.datatype}, {"shape", tensor.shape}});
  }
  return list;
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

int RunInspect(const InspectOptions& options) {
  auto target = Connect(options.reference, options.registry);
  if (!target.ok()) {
    return Fail(target.status());
  }
  const Reference& reference = target->reference;
  RegistryClient& client = *target->client;
  auto fetched = client.GetManifest(reference.repository, reference.Identifier());
  if (!fetched.ok()) {
    return Fail(fetched.status());
  }
  auto manifest = ParseImageManifest(fetched->media_type, fetched->bytes);
  if (!manifest.ok()) {
    return Fail(manifest.status());
  }
  std::optional<ModelMetadata> metadata;
  std::optional<ModelArtifact> artifact;
  if (auto model = ModelArtifactOf(*manifest); model.ok()) {
    auto config = client.FetchSmallBlob(reference.repository, manifest->config);
    if (!config.ok()) {
      return Fail(config.status());
    }
    auto decoded = DecodeModelConfig(*config);
    if (!decoded.ok()) {
      return Fail(decoded.status());
    }
    metadata = std::move(decoded).value();
    artifact = std::move(model).value();
  }
  uint64_t total = 0;
  ordered_json layers = ordered_json::array();
  for (const auto& layer : manifest->layers) {
    total += layer.size;
    const auto path = layer.annotations.find(std::string(annotation::kModelPackFilepath));
    const auto title = layer.annotations.find(std::string(annotation::kTitle));
    const std::string name = path != layer.annotations.end()    ? path->second
                             : title != layer.annotations.end() ? title->second
                                                                : "";
    layers.push_back({{"path", name},
                      {"mediaType", layer.media_type},
                      {"digest", layer.digest.str()},
                      {"size", layer.size}});
  }
  if (options.json) {
    ordered_json out = {{"reference", reference.ToString()},
                        {"digest", fetched->digest.str()},
                        {"mediaType", manifest->media_type},
                        {"artifactType", manifest->artifact_type},
                        {"size", total},
                        {"layers", layers}};
    if (metadata) {
      ordered_json model = {{"name", metadata->name},
                            {"version", metadata->version},
                            {"platform", metadata->platform},
                            {"architectures", metadata->architectures},
                            {"inputs", TensorsJson(metadata->inputs)},
                            {"outputs", TensorsJson(metadata->outputs)}};
      if (!metadata->model_config_json.empty()) {
        model["model_config"] = ordered_json::parse(metadata->model_config_json, nullptr, false);
      }
      out["model"] = std::move(model);
    }
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
  }
  std::printf("reference:     %s\ndigest:        %s\nmedia type:    %s\nartifact type: %s\n",
              reference.ToString().c_str(), fetched->digest.str().c_str(),
              manifest->media_type.c_str(),
              manifest->artifact_type.empty() ? "(none)" : manifest->artifact_type.c_str());
  if (metadata) {
    std::printf("model:         %s version %lld (%s; %s)\n", metadata->name.c_str(),
                static_cast<long long>(metadata->version), metadata->platform.c_str(),
                fmt::format("{}", fmt::join(metadata->architectures, ", ")).c_str());
    for (const auto& [title, tensors] :
         {std::pair{"inputs", &metadata->inputs}, std::pair{"outputs", &metadata->outputs}}) {
      std::printf("%s:\n", title);
      for (const auto& tensor : *tensors) {
        std::printf("  %s %s %s\n", tensor.name.c_str(), tensor.datatype.c_str(),
                    ShapeText(tensor.shape).c_str());
      }
    }
    if (!metadata->model_config_json.empty()) {
      std::printf("model.json:    %s\n", metadata->model_config_json.c_str());
    }
  } else {
    std::printf("(not a perch model: config %s)\n", manifest->config.media_type.c_str());
  }
  std::printf("layers (%zu, %s):\n", manifest->layers.size(), HumanBytes(total).c_str());
  for (const auto& layer : layers) {
    std::printf("  %s %10llu %s\n", layer["digest"].get<std::string>().c_str(),
                static_cast<unsigned long long>(layer["size"].get<uint64_t>()),
                layer["path"].get<std::string>().c_str());
  }
  return 0;
}

// --- tag ----------------------------------------------------------------

struct TagOptions {
  std::string reference;
  std::string target;  // a tag, or a full reference on the same registry
  RegistryFlags registry;
};

int RunTag(const TagOptions& options) {
  auto source = Reference::Parse(options.reference);
  if (!source.ok()) {
    return Fail(source.status());
  }
  Reference target = *source;
  target.digest.clear();
  if (IsValidTag(options.target)) {
    target.tag = options.target;
  } else {
    auto parsed = Reference::Parse(options.target);
    if (!parsed.ok() || !parsed->digest.empty()) {
      return Fail(InvalidArgument(
          fmt::format("\"{}\" is neither a tag nor a HOST/REPO:TAG reference", options.target)));
    }
    if (parsed->registry != source->registry) {
      return Fail(InvalidArgument(
          "tag works within one registry; to copy between registries, pull and push"));
    }
    target = *parsed;
  }
  auto client = MakeRegistryClient(source->registry, options.registry);
  if (!client.ok()) {
    return Fail(client.status());
  }
  auto fetched = (*client)->GetManifest(source->repository, source->Identifier());
  if (!fetched.ok()) {
    return Fail(fetched.status());
  }
  if (target.repository != source->repository) {
    // Another repository must hold the blobs before the manifest: mounting
    // shares them inside the registry instead of sending them again.
    auto manifest = ParseImageManifest(fetched->media_type, fetched->bytes);
    if (!manifest.ok()) {
      return Fail(manifest.status());
    }
    std::vector<Descriptor> blobs = manifest->layers;
    blobs.push_back(manifest->config);
    for (const auto& blob : blobs) {
      auto mounted = (*client)->MountBlob(target.repository, blob.digest, source->repository);
      if (!mounted.ok()) {
        return Fail(mounted.status());
      }
      if (!*mounted) {
        return Fail(Unavailable(fmt::format(
            "registry {} would not mount blob {} from {} into {}; pull and push instead",
            source->registry, blob.digest.str(), source->repository, target.repository)));
      }
    }
  }
  const std::string media_type =
      fetched->media_type.empty() ? std::string(media_type::kOciManifest) : fetched->media_type;
  auto digest = (*client)->PutManifest(target.repository, target.tag, fetched->bytes, media_type);
  if (!digest.ok()) {
    return Fail(digest.status());
  }
  std::printf("tagged %s as %s\ndigest: %s\n", source->ToString().c_str(),
              target.ToString().c_str(), digest->str().c_str());
  return 0;
}

// --- rm -----------------------------------------------------------------

struct RmOptions {
  std::string reference;
  RegistryFlags registry;
};

int RunRm(const RmOptions& options) {
  auto target = Connect(options.reference, options.registry);
  if (!target.ok()) {
    return Fail(target.status());
  }
  const Reference& reference = target->reference;
  RegistryClient& client = *target->client;
  // The Distribution API deletes manifests by digest only.
  auto head = client.HeadManifest(reference.repository, reference.Identifier());
  if (!head.ok()) {
    return Fail(head.status());
  }
  if (Status deleted = client.DeleteManifest(reference.repository, head->digest); !deleted.ok()) {
    return Fail(deleted);
  }
  std::printf("deleted %s (%s; every tag naming that manifest is gone with it)\n",
              reference.ToString().c_str(), head->digest.str().c_str());
  return 0;
}

}  // namespace

CommandRunner AddPushCommand(CLI::App& app) {
  auto options = std::make_shared<PushOptions>();
  app.add_option("path", options->path,
                 "A model folder (NAME/ with version folders), a version folder (NAME/N/) or an "
                 ".onnx file")
      ->required();
  app.add_option("reference", options->reference, "Where to push: HOST[:PORT]/REPO[:TAG]")
      ->required();
  app.add_option("--name", options->name,
                 "Model name (default: the folder's name; for an .onnx file, the repository's "
                 "last component)");
  app.add_option("--version", options->version,
                 "Version to push (a model folder: default the highest; a file: default 1)")
      ->check(CLI::PositiveNumber);
  app.add_option("--mount-from", options->mount_from,
                 "Another repository of the registry to mount layers from instead of uploading");
  app.add_option("--chunk-size", options->registry.chunk_size,
                 "Blobs larger than this are uploaded in chunks of this many bytes")
      ->check(CLI::Range(uint64_t{1024}, uint64_t{1} << 34))
      ->capture_default_str();
  AddRegistryFlags(app, options->registry);
  return [options] { return RunPush(*options); };
}

CommandRunner AddPullCommand(CLI::App& app) {
  auto options = std::make_shared<PullOptions>();
  app.add_option("reference", options->reference, "HOST[:PORT]/REPO[:TAG][@sha256:...]")
      ->required();
  app.add_option("--to", options->to, "Model repository to install into: DIR/<name>/<version>/")
      ->capture_default_str();
  app.add_option("--cache", options->cache,
                 "Verified blobs and partial downloads (an interrupted pull resumes from here)")
      ->envname("PERCH_CACHE")
      ->capture_default_str();
  AddRegistryFlags(app, options->registry);
  return [options] { return RunPull(*options); };
}

CommandRunner AddLsCommand(CLI::App& app) {
  auto options = std::make_shared<LsOptions>();
  app.add_option("target", options->target,
                 "HOST[:PORT] lists repositories, HOST[:PORT]/REPO lists tags")
      ->required();
  AddRegistryFlags(app, options->registry);
  return [options] { return RunLs(*options); };
}

CommandRunner AddInspectCommand(CLI::App& app) {
  auto options = std::make_shared<InspectOptions>();
  app.add_option("reference", options->reference, "HOST[:PORT]/REPO[:TAG][@sha256:...]")
      ->required();
  app.add_flag("--json", options->json, "Print JSON");
  AddRegistryFlags(app, options->registry);
  return [options] { return RunInspect(*options); };
}

CommandRunner AddTagCommand(CLI::App& app) {
  auto options = std::make_shared<TagOptions>();
  app.add_option("reference", options->reference, "The model to tag")->required();
  app.add_option("tag", options->target,
                 "The new tag, or HOST/REPO:TAG in the same registry (blobs are mounted)")
      ->required();
  AddRegistryFlags(app, options->registry);
  return [options] { return RunTag(*options); };
}

CommandRunner AddRmCommand(CLI::App& app) {
  auto options = std::make_shared<RmOptions>();
  app.add_option("reference", options->reference,
                 "The manifest to delete (by tag or digest; every tag naming it goes too)")
      ->required();
  AddRegistryFlags(app, options->registry);
  return [options] { return RunRm(*options); };
}

}  // namespace perch::cli
