// A pipeline (a model.json of kind "pipeline", docs/pipelines.md) stored in
// an OCI registry as one perch model artifact that pins its step models by
// manifest digest (docs/model-store.md, "Pipelines").
//
// The pipeline's manifest is a perch model manifest whose config says
// platform "pipeline" and carries the model.json, in which every model step
// names the manifest digest of its model ("digest": "sha256:…"). Its only
// layer is the OCI empty descriptor: a pipeline has no files. The step
// models are perch model artifacts of their own, in the repositories beside
// the pipeline's (HOST/NS/wakeword pins HOST/NS/melspectrogram@sha256:…).
//
// Plain data and pure functions, thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "store/digest.h"
#include "store/model_artifact.h"
#include "store/reference.h"

namespace perch {

inline constexpr std::string_view kPipelinePlatform = "pipeline";

// The OCI empty blob, the one layer of a pipeline manifest.
inline constexpr std::string_view kEmptyBlob = "{}";

// A model a pipeline's steps name, and, once pinned, its manifest digest.
struct PipelineStepModel {
  std::string model;
  std::string version;             // as model.json says it; "" for the newest
  std::string digest;              // "sha256:…" once pinned, else ""
  std::vector<std::string> steps;  // the steps naming it
};

// The distinct models the model steps of `model_json` name, in the order
// they first appear. InvalidArgument when the JSON is not a pipeline, or two
// steps name one model with different versions or digests.
Result<std::vector<PipelineStepModel>> PipelineStepModels(std::string_view model_json);

// The pipeline's declared "inputs" or "outputs" ("dims" as the shape).
Result<std::vector<TensorInfo>> PipelineTensors(std::string_view model_json, const char* key);

// `model_json` with every model step naming model M given "version" and
// "digest" from `pins[M]` (compact JSON). InvalidArgument when a step's
// model has no pin.
struct StepPin {
  int64_t version = 0;
  Digest digest = Sha256Of("");
};
Result<std::string> PinPipeline(std::string_view model_json,
                                const std::map<std::string, StepPin>& pins);

// The repository of step model `model` beside `pipeline_repository`:
// "ns/wakeword" + "melspectrogram" -> "ns/melspectrogram". InvalidArgument
// when the model's name cannot be a repository name (upper case letters).
Result<std::string> StepRepository(const std::string& pipeline_repository,
                                   const std::string& model);

// The pinned step models of a pipeline's metadata, as references by digest
// in the registry of `pipeline`. InvalidArgument naming the step when one is
// not pinned (the model.json was not written by `perch push`).
struct PinnedStep {
  std::string model;
  int64_t version = 0;
  Reference reference;  // HOST/NS/<model>@sha256:…
  std::string steps;    // the steps naming it, for messages: "mel, mel2"
};
Result<std::vector<PinnedStep>> PinnedStepsOf(const Reference& pipeline,
                                              const ModelMetadata& metadata);

// Checks that the model fetched by `pinned.reference` (`name`, `version`)
// is the one the pipeline names. InvalidArgument otherwise.
Status CheckPinnedStep(const PinnedStep& pinned, const std::string& name, int64_t version);

}  // namespace perch
