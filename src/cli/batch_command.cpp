// `perch batch`: scores files of requests (or stdin) with one model, through
// the same ModelManager, Scheduler and InferenceService as `perch serve`,
// so batch and online answers come from the same code and the same
// artifact. The job logic (inputs, order, output folder) is in src/batch/;
// this file resolves the model and wires. `--dask` hands the job to the
// Dask runner (python/perch_dask).
#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "batch/batch_job.h"
#include "batch/batch_runner.h"
#include "cli/commands.h"
#include "cli/local_model.h"
#include "cli/progress.h"
#include "cli/registry_flags.h"
#include "cli/serving_engine.h"
#include "core/log.h"
#include "core/metrics.h"
#include "engine/engine.h"
#include "models/inference_service.h"
#include "models/model_manager.h"
#include "models/scheduler.h"
#include "pipeline/pipeline.h"
#include "store/model_puller.h"
#include "store/model_pusher.h"
#include "store/reference.h"

namespace perch::cli {
namespace {

namespace fs = std::filesystem;

struct BatchCommandOptions {
  std::string model;
  std::string repository;
  std::string state = "perch-state";
  RegistryFlags registry;
  std::vector<std::string> inputs;
  std::string output;
  BatchOptions batch;
  int engine_threads = 0;
  bool pull_only = false;
  std::string dask;
  int64_t partition_lines = 256;
  std::string worker_perch;
  std::string log_level = "info";
};

// Where a model to run lives once resolved: a repository folder and the
// model's name in it, and what is known of its identity up front.
struct ResolvedModel {
  fs::path repository;
  std::string name;
  std::string version;  // "" for the newest the folder serves
  std::string digest;   // "" when it must be computed from the files
};

int Fail(const Logger& logger, const Status& status) {
  logger.Error("{}", status.message());
  return 1;
}

Status CheckOptions(const BatchCommandOptions& options) {
  const bool pipe_in =
      std::find(options.inputs.begin(), options.inputs.end(), "-") != options.inputs.end();
  if (options.pull_only) {
    return Status::Ok();
  }
  if (options.inputs.empty() || options.output.empty()) {
    return InvalidArgument("give --input PATH... and --output DIR (or --input - --output -)");
  }
  if (pipe_in && (options.inputs.size() != 1 || options.output != "-")) {
    return InvalidArgument(
        "pipe mode is --input - --output - alone: requests on stdin, records on stdout");
  }
  if (!pipe_in && options.output == "-") {
    return InvalidArgument("--output - (stdout) goes with --input - (stdin)");
  }
  if (!options.dask.empty() && pipe_in) {
    return InvalidArgument("--dask scores files: give --input PATH... and --output DIR");
  }
  return Status::Ok();
}

// Pulls (or finds in the cache of --state) an OCI reference, as `serve
// --model` does: every blob verified, installed atomically.
Result<ResolvedModel> PullModel(const Reference& reference, const BatchCommandOptions& options,
                                const Logger& logger) {
  PERCH_ASSIGN_OR_RETURN(auto puller, ModelPuller::Open(options.state));
  PERCH_ASSIGN_OR_RETURN(auto client, MakeRegistryClient(reference.registry, options.registry));
  auto synced = puller->Sync(*client, reference);
  if (!synced.ok()) {
    return Status(synced.status().code(), fmt::format("cannot pull --model {}: {}", options.model,
                                                      synced.status().message()));
  }
  const PulledRecord& record = synced->record;
  if (synced->from_cache) {
    logger.Warn("--model {}: {}; using the cached {} instead", options.model,
                synced->registry_status.message(), record.digest.str());
  }
  return ResolvedModel{puller->models_folder(), record.model, std::to_string(record.version),
                       record.digest.str()};
}

Result<ResolvedModel> ResolveModel(const BatchCommandOptions& options, const Logger& logger) {
  if (!options.repository.empty()) {
    if (!fs::is_directory(options.repository)) {
      return NotFound(fmt::format("--repo {} is not a folder", options.repository));
    }
    return ResolvedModel{options.repository, options.model, "", ""};
  }
  std::error_code error;
  const fs::path path(options.model);
  if (fs::is_directory(path, error)) {
    const fs::path folder = fs::absolute(path, error).lexically_normal();
    const fs::path clean = folder.filename().empty() ? folder.parent_path() : folder;
    if (fs::exists(clean / "model.onnx", error)) {
      return InvalidArgument(fmt::format(
          "--model {} is a version folder; give the model folder above it (NAME/ holding "
          "version folders)",
          options.model));
    }
    return ResolvedModel{clean.parent_path(), clean.filename().string(), "", ""};
  }
  if (fs::exists(path, error)) {
    return InvalidArgument(
        fmt::format("--model {} is a file; give a model folder (NAME/1/model.onnx), a model "
                    "name with --repo, or a registry reference",
                    options.model));
  }
  auto reference = Reference::Parse(options.model);
  if (!reference.ok()) {
    return InvalidArgument(
        fmt::format("--model {} is neither a model folder nor a registry reference: {}",
                    options.model, reference.status().message()));
  }
  return PullModel(*reference, options, logger);
}

// The manifest digest of the version `model` runs: what the folder records
// when it was pulled, else what `perch push` would give its files.
Result<std::string> DigestOf(const ResolvedModel& resolved, const LoadedModel& model,
                             Engine& engine) {
  if (!resolved.digest.empty()) {
    return resolved.digest;
  }
  if (model.config().pipeline) {
    return std::string();  // a pipeline is no artifact of its own: it names none
  }
  const fs::path folder = resolved.repository / resolved.name;
  if (const auto installed = InstalledDigest(folder / std::to_string(model.version()))) {
    return installed->str();
  }
  PERCH_ASSIGN_OR_RETURN(
      const LocalModel local,
      ReadLocalModel(folder, {.name = model.name(), .default_name = {}, .version = model.version()},
                     engine));
  PERCH_ASSIGN_OR_RETURN(const Digest digest, ModelManifestDigest(local.metadata, local.files));
  return digest.str();
}

Status ScoreFiles(const BatchCommandOptions& options, const BatchRunner& runner,
                  const ModelIdentity& identity, const Logger& logger) {
  std::vector<fs::path> paths(options.inputs.begin(), options.inputs.end());
  PERCH_ASSIGN_OR_RETURN(const auto inputs, ListBatchInputs(paths));
  PERCH_ASSIGN_OR_RETURN(const auto folder, OutputFolder::Open(options.output, identity));
  const auto start = std::chrono::steady_clock::now();
  uint64_t total_bytes = 0;
  for (const auto& input : inputs) {
    total_bytes += input.bytes;
  }
  ProgressBar bar("scoring");
  uint64_t bytes_before = 0;
  std::vector<FileSummary> summaries;
  for (const auto& input : inputs) {
    FileSummary summary{input.path.string(), input.output_name, {}, false};
    if (auto finished = folder->Finished(input.output_name); finished.ok()) {
      summary.counts = *finished;
      summary.skipped = true;
      logger.Info("{}: finished by an earlier run, skipped", input.output_name);
    } else {
      PERCH_ASSIGN_OR_RETURN(auto file, folder->Begin(input.output_name));
      auto progress = [&](uint64_t done) { bar.Update(bytes_before + done, total_bytes); };
      Result<BatchCounts> counts = BatchCounts{};
      if (input.arrays.empty()) {
        std::ifstream in(input.path, std::ios::binary);
        if (!in) {
          return NotFound(fmt::format("cannot open --input {}", input.path.string()));
        }
        counts = runner.RunJsonLines(in, file->stream(), progress);
      } else {
        counts = runner.RunNpyFiles(input.arrays, file->stream(), progress);
      }
      if (!counts.ok()) {
        return Status(counts.status().code(),
                      fmt::format("{}: {}", input.path.string(), counts.status().message()));
      }
      PERCH_RETURN_IF_ERROR(file->Commit());
      summary.counts = *counts;
    }
    bytes_before += input.bytes;
    bar.Update(bytes_before, total_bytes);
    summaries.push_back(std::move(summary));
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  PERCH_RETURN_IF_ERROR(folder->WriteSuccess(summaries, seconds));
  BatchCounts total;
  for (const auto& summary : summaries) {
    total.records += summary.counts.records;
    total.errors += summary.counts.errors;
  }
  logger.Info("{} records ({} errors) from {} files in {:.2f} s: {}", total.records, total.errors,
              summaries.size(), seconds, options.output);
  return Status::Ok();
}

// Replaces this process with the Dask runner (python/perch_dask), which
// drives the cluster and runs this binary in pipe mode on the workers.
int RunDask(const BatchCommandOptions& options, const Logger& logger) {
  std::error_code error;
  const std::string self = fs::read_symlink("/proc/self/exe", error).string();
  const char* python_env = std::getenv("PERCH_PYTHON");
  const std::string python = python_env ? python_env : "/usr/bin/python3";
  const char* path_env = std::getenv("PERCH_PYTHONPATH");
  std::string python_path = path_env ? path_env : PERCH_PYTHON_DIR;
  if (const char* existing = std::getenv("PYTHONPATH"); existing && *existing) {
    python_path += std::string(":") + existing;
  }
  ::setenv("PYTHONPATH", python_path.c_str(), 1);
  // The driver hands the token to the workers' perch through its
  // environment, never on a command line.
  if (!options.registry.token.empty()) {
    ::setenv("PERCH_TOKEN", options.registry.token.c_str(), 1);
  }
  std::vector<std::string> args = {python,
                                   "-m",
                                   "perch_dask",
                                   "--scheduler",
                                   options.dask,
                                   "--model",
                                   options.model,
                                   "--output",
                                   options.output,
                                   "--perch",
                                   options.worker_perch.empty() ? self : options.worker_perch,
                                   "--partition-lines",
                                   std::to_string(options.partition_lines),
                                   "--concurrency",
                                   std::to_string(options.batch.concurrency),
                                   "--max-batch",
                                   std::to_string(options.batch.max_batch),
                                   "--threads",
                                   std::to_string(options.engine_threads),
                                   "--timeout",
                                   std::to_string(options.registry.timeout_seconds)};
  if (options.registry.insecure) {
    args.push_back("--insecure");
  }
  if (!options.registry.ca_file.empty()) {
    args.insert(args.end(), {"--ca-file", options.registry.ca_file});
  }
  if (!options.repository.empty()) {
    args.insert(args.end(), {"--repo", options.repository});
  }
  for (const auto& input : options.inputs) {
    args.insert(args.end(), {"--input", input});
  }
  std::vector<char*> argv;
  for (auto& arg : args) {
    argv.push_back(arg.data());
  }
  argv.push_back(nullptr);
  ::execvp(argv[0], argv.data());
  logger.Error(
      "cannot start the Dask runner with {}: {} (set PERCH_PYTHON to a python3 that "
      "has python3-distributed)",
      python, std::strerror(errno));
  return 1;
}

int RunBatch(const BatchCommandOptions& options) {
  const auto level = LogLevelFromString(options.log_level).value_or(LogLevel::kInfo);
  const Logger logger = Logger::ToStderr(level, "batch");
  if (const Status checked = CheckOptions(options); !checked.ok()) {
    return Fail(logger, checked);
  }
  if (!options.dask.empty()) {
    return RunDask(options, logger);
  }
  auto resolved = ResolveModel(options, logger);
  if (!resolved.ok()) {
    return Fail(logger, resolved.status());
  }
  MetricsRegistry metrics;
  auto engine = cli::CreateServingEngine(
      OnnxEngineOptions{.intra_op_threads = options.engine_threads}, logger.ForComponent("engine"));
  if (!engine.ok()) {
    return Fail(logger, engine.status());
  }
  ModelManager models(ModelManagerOptions{.repository = resolved->repository,
                                          .load_pipeline = MakePipelineLoader(metrics)},
                      **engine, metrics, logger.ForComponent("models"));
  // Only the job's model is loaded, however many others the folder holds,
  // but for a pipeline, whose steps are other models of the folder.
  const auto scanned = ScanModel(resolved->repository, resolved->name);
  const bool pipeline = scanned.ok() && scanned->config.pipeline.has_value();
  if (pipeline) {
    if (const Status started = models.Start(); !started.ok()) {
      return Fail(logger, started);
    }
  }
  if (const Status loaded = models.LoadModel(resolved->name); !loaded.ok()) {
    return Fail(logger, Status(loaded.code(),
                               fmt::format("cannot load model '{}' from {}: {}", resolved->name,
                                           resolved->repository.string(), loaded.message())));
  }
  auto model = models.Acquire(resolved->name, resolved->version);
  if (!model.ok()) {
    return Fail(logger, model.status());
  }
  auto digest = DigestOf(*resolved, **model, **engine);
  if (!digest.ok()) {
    return Fail(logger, digest.status());
  }
  const ModelIdentity identity{resolved->name, (*model)->version(), *digest};
  if (options.pull_only) {
    std::printf("%s\n",
                nlohmann::json{{"model_name", identity.name},
                               {"model_version", std::to_string(identity.version)},
                               {"model_digest", identity.digest},
                               {"model_folder", (resolved->repository / resolved->name).string()}}
                    .dump()
                    .c_str());
    return 0;
  }
  Scheduler scheduler(SchedulerOptions{.workers = std::max(1, options.batch.concurrency),
                                       .run_on_caller_when_free = true});
  scheduler.Start();
  const InferenceService inference(models, scheduler);
  const BatchRunner runner(inference, *model, identity, options.batch);
  Status status = Status::Ok();
  if (options.output == "-") {
    std::ios::sync_with_stdio(false);
    auto counts = runner.RunJsonLines(std::cin, std::cout);
    status = counts.status();
    if (counts.ok()) {
      logger.Debug("{} records ({} errors) on stdout", counts->records, counts->errors);
    }
  } else {
    status = ScoreFiles(options, runner, identity, logger);
  }
  scheduler.Stop();
  models.Stop();
  return status.ok() ? 0 : Fail(logger, status);
}

}  // namespace

CommandRunner AddBatchCommand(CLI::App& app) {
  auto options = std::make_shared<BatchCommandOptions>();
  app.add_option("--model", options->model,
                 "The model: a model folder (NAME/ holding version folders), a model name in "
                 "--repo, or a registry reference HOST[:PORT]/REPO[:TAG][@sha256:...] (pulled "
                 "and verified into --state)")
      ->required();
  app.add_option("--repo", options->repository, "Model repository that --model names a model of");
  app.add_option("--state", options->state,
                 "Folder for pulled models and their blobs (registry references)")
      ->envname("PERCH_STATE")
      ->capture_default_str();
  AddRegistryFlags(app, options->registry);
  app.add_option("--input", options->inputs,
                 "JSON Lines file (one OIP request per line), folder of .jsonl files or of .npy "
                 "files (single-input models), repeatable; - reads stdin (pipe mode)");
  app.add_option("--output", options->output,
                 "Output folder: DIR/<input name> per input, DIR/_SUCCESS at the end; - writes "
                 "stdout (pipe mode)");
  app.add_option("--concurrency", options->batch.concurrency,
                 "Groups of requests in flight at once")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  app.add_option("--max-batch", options->batch.max_batch,
                 "Requests merged into one engine run, for models with a batch dimension")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  app.add_option("--threads", options->engine_threads,
                 "Threads of the inference pool (0: one per core)")
      ->envname("PERCH_THREADS")
      ->check(CLI::Range(0, 1024))
      ->capture_default_str();
  app.add_option("--first-line", options->batch.first_line,
                 "Pipe mode: the number of stdin's first line (the id of a request without one)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 60))
      ->capture_default_str();
  app.add_flag("--pull-only", options->pull_only,
               "Resolve, pull and load the model, print its name, version and digest as JSON, "
               "and exit (what the Dask runner does once per worker)");
  app.add_option("--dask", options->dask,
                 "Run the job on a Dask cluster, tcp://HOST:8786 (needs python3-distributed)");
  app.add_option("--partition-lines", options->partition_lines,
                 "--dask: lines per task (rounded up to a multiple of --max-batch)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30))
      ->capture_default_str();
  app.add_option("--worker-perch", options->worker_perch,
                 "--dask: the perch binary on the workers (default: this one's path)");
  app.add_option("--log-level", options->log_level, "debug, info, warn or error")
      ->envname("PERCH_LOG_LEVEL")
      ->check(CLI::IsMember({"debug", "info", "warn", "error"}))
      ->capture_default_str();
  return [options] { return RunBatch(*options); };
}

}  // namespace perch::cli
