#include "pipeline/pipeline.h"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <future>
#include <map>
#include <sstream>
#include <variant>

#include "models/inference_service.h"
#include "pipeline/operations.h"
#include "pipeline/pipeline_spec.h"
#include "pipeline/stream_table.h"

namespace perch {
namespace {

using pipeline::Op;
using pipeline::PipelineSpec;
using pipeline::Step;
using pipeline::StreamState;
using pipeline::StreamTable;
using Clock = std::chrono::steady_clock;

constexpr size_t kMaxStreamIdBytes = 256;
constexpr std::string_view kBranchTaken = "then";
constexpr std::string_view kBranchNotTaken = "else";

struct StepMetrics {
  Histogram& seconds;
  Counter& failures;
  Counter& skipped;
};

// The values of one request: pipeline tensors by name.
using Values = std::map<std::string, Tensor, std::less<>>;

// Runs a pipeline. Thread-safe: the plan is immutable after load; each
// request locks its stream's state while it runs.
class PipelineSession : public Session {
 public:
  PipelineSession(std::string name, PipelineSpec spec, std::vector<std::vector<size_t>> levels,
                  StepModels steps, MetricsRegistry& metrics, const PipelineOptions& options)
      : name_(std::move(name)),
        spec_(std::move(spec)),
        levels_(std::move(levels)),
        steps_(std::move(steps)),
        streams_(spec_.stream_limits, options.now,
                 pipeline::StreamCounters{
                     .live = metrics.GetGauge("perch_pipeline_streams",
                                              "Streams whose state a pipeline keeps",
                                              {{"model", name_}}),
                     .dropped_idle = metrics.GetCounter(
                         "perch_pipeline_streams_dropped_total",
                         "Stream states a pipeline dropped, idle past the timeout or least "
                         "recently used at the cap",
                         {{"model", name_}, {"reason", "idle"}}),
                     .dropped_full = metrics.GetCounter("perch_pipeline_streams_dropped_total",
                                                        "Stream states a pipeline dropped, idle "
                                                        "past the timeout or least recently used "
                                                        "at the cap",
                                                        {{"model", name_}, {"reason", "full"}})}) {
    signature_.inputs = spec_.inputs;
    signature_.outputs = spec_.outputs;
    for (const Step& step : spec_.steps) {
      const MetricLabels labels{{"model", name_}, {"step", step.name}};
      step_metrics_.push_back(StepMetrics{
          .seconds =
              metrics.GetHistogram("perch_pipeline_step_seconds", "Time a pipeline step took",
                                   labels, LatencyBucketsSeconds()),
          .failures = metrics.GetCounter("perch_pipeline_step_failures_total",
                                         "Pipeline steps that failed", labels),
          .skipped = metrics.GetCounter("perch_pipeline_step_skipped_total",
                                        "Pipeline steps a switch did not run", labels)});
    }
  }

  const ModelSignature& Signature() const override { return signature_; }

  Result<std::vector<Tensor>> Run(const std::vector<Tensor>& inputs,
                                  const std::vector<std::string>& output_names) override {
    return RunWithContext(inputs, output_names, RunContext{});
  }

  // The stream is the request's parameter spec_.stream_parameter; step
  // models get the request's parameters and deadline as they are.
  Result<std::vector<Tensor>> RunWithContext(const std::vector<Tensor>& inputs,
                                             const std::vector<std::string>& output_names,
                                             const RunContext& context) override {
    Values values;
    for (const Tensor& input : inputs) {
      values[input.name] = input;
    }
    std::shared_ptr<StreamState> stream;
    std::unique_lock<std::mutex> stream_lock;
    if (spec_.stateful) {
      PERCH_ASSIGN_OR_RETURN(const std::string id, StreamId(context.parameters));
      stream = streams_.Get(id);
      stream_lock = std::unique_lock(stream->mutex);
    }
    std::vector<bool> ran(spec_.steps.size(), false);
    for (const auto& level : levels_) {
      PERCH_RETURN_IF_ERROR(RunLevel(level, values, stream.get(), ran, context));
    }
    // State carried to the stream's next request; a step that did not run
    // leaves the last value in place.
    for (const Step& step : spec_.steps) {
      if (step.op != Op::kState) {
        continue;
      }
      const auto carried = values.find(step.from);
      if (carried != values.end()) {
        stream->tensors[step.name] = carried->second;
      }
    }
    std::vector<Tensor> outputs;
    for (const auto& name : output_names) {
      const auto found = values.find(name);
      if (found == values.end()) {
        continue;  // made by a step a switch did not run
      }
      outputs.push_back(std::move(found->second));
      outputs.back().name = name;
    }
    return outputs;
  }

 private:
  // The stream's id: a string parameter, or an integer one in decimal.
  Result<std::string> StreamId(const InferParameters& parameters) const {
    const std::string& key = spec_.stream_parameter;
    const auto found = parameters.find(key);
    if (found == parameters.end()) {
      return InvalidArgument(fmt::format(
          "pipeline '{}' keeps state per stream: name the stream in the request parameter "
          "\"{}\", e.g. {{\"parameters\": {{\"{}\": \"mic-1\"}}, \"inputs\": [...]}}",
          name_, key, key));
    }
    std::string id;
    if (const auto* text = std::get_if<std::string>(&found->second)) {
      id = *text;
    } else if (const auto* number = std::get_if<int64_t>(&found->second)) {
      id = std::to_string(*number);
    } else {
      return InvalidArgument(
          fmt::format("parameter \"{}\" must be a string (or an integer), not {}", key,
                      InferParameterTypeName(found->second)));
    }
    if (id.empty() || id.size() > kMaxStreamIdBytes) {
      return InvalidArgument(fmt::format("parameter \"{}\" must name the stream in 1 to {} bytes",
                                         key, kMaxStreamIdBytes));
    }
    return id;
  }

  Status RunLevel(const std::vector<size_t>& level, Values& values, StreamState* stream,
                  std::vector<bool>& ran, const RunContext& context) {
    std::vector<size_t> to_run;
    for (size_t index : level) {
      const Step& step = spec_.steps[index];
      const bool deps_ran =
          std::all_of(step.deps.begin(), step.deps.end(), [&](size_t dep) { return ran[dep]; });
      bool gate_open = true;
      if (step.gate && ran[*step.gate]) {
        const Tensor& branch = values.at(spec_.steps[*step.gate].outputs.front());
        gate_open = branch.data.ends_with(kBranchTaken);
      }
      if (deps_ran && gate_open) {
        to_run.push_back(index);
      } else {
        step_metrics_[index].skipped.Increment();
      }
    }
    // Model steps that wait on another process (a process model's server)
    // run at once, each on a thread of its own. Those that compute in perch
    // run in turn on the request's thread: they share the engine's thread
    // pool, which already spreads each one over the cores, so running them
    // at once only makes them contend for the cores and costs a thread start
    // and two wake-ups each (bench/RESULTS.md, "Pipeline overhead").
    // Built-in operations are cheap enough to run in turn.
    Status status = Status::Ok();
    std::vector<std::pair<size_t, std::future<Result<std::vector<Tensor>>>>> waiting;
    std::vector<std::pair<size_t, std::shared_ptr<LoadedModel>>> computing;
    for (size_t index : to_run) {
      const Step& step = spec_.steps[index];
      if (step.op != Op::kModel) {
        continue;
      }
      // Acquired per request, so a step model that is hot reloaded serves
      // the pipeline's next request.
      auto model = steps_(step.model, step.version);
      if (!model.ok()) {
        step_metrics_[index].failures.Increment();
        status = StepError(step, model.status());
        break;
      }
      if ((*model)->session().WaitsOnAnotherProcess()) {
        waiting.emplace_back(
            index, std::async(std::launch::async,
                              [this, &values, &context, index, model = std::move(model).value()] {
                                return RunModelStep(index, *model, values, context);
                              }));
      } else {
        computing.emplace_back(index, std::move(model).value());
      }
    }
    std::vector<std::pair<size_t, std::vector<Tensor>>> results;
    for (const auto& [index, model] : computing) {
      if (!status.ok()) {
        break;
      }
      auto outputs = RunModelStep(index, *model, values, context);
      if (outputs.ok()) {
        results.emplace_back(index, std::move(outputs).value());
      } else {
        status = outputs.status();
      }
    }
    for (auto& [index, future] : waiting) {
      auto outputs = future.get();
      if (outputs.ok()) {
        results.emplace_back(index, std::move(outputs).value());
      } else if (status.ok()) {
        status = outputs.status();
      }
    }
    PERCH_RETURN_IF_ERROR(status);
    for (auto& [index, outputs] : results) {
      const Step& step = spec_.steps[index];
      for (size_t i = 0; i < outputs.size(); ++i) {
        values[step.outputs[i]] = std::move(outputs[i]);
      }
      ran[index] = true;
    }
    for (size_t index : to_run) {
      if (spec_.steps[index].op == Op::kModel) {
        continue;
      }
      const auto started = Clock::now();
      auto output = RunOperation(spec_.steps[index], values, stream);
      step_metrics_[index].seconds.Observe(
          std::chrono::duration<double>(Clock::now() - started).count());
      if (!output.ok()) {
        step_metrics_[index].failures.Increment();
        return Status(output.status().code(), fmt::format("step '{}': {}", spec_.steps[index].name,
                                                          output.status().message()));
      }
      values[spec_.steps[index].outputs.front()] = std::move(output).value();
      ran[index] = true;
    }
    return Status::Ok();
  }

  Result<std::vector<Tensor>> RunModelStep(size_t index, LoadedModel& model, const Values& values,
                                           const RunContext& context) const {
    const Step& step = spec_.steps[index];
    const auto started = Clock::now();
    auto result = RunModel(step, model, values, context);
    step_metrics_[index].seconds.Observe(
        std::chrono::duration<double>(Clock::now() - started).count());
    if (!result.ok()) {
      step_metrics_[index].failures.Increment();
      return StepError(step, result.status());
    }
    return result;
  }

  static Status StepError(const Step& step, const Status& status) {
    return Status(status.code(), fmt::format("step '{}': {}", step.name, status.message()));
  }

  static Result<std::vector<Tensor>> RunModel(const Step& step, LoadedModel& model,
                                              const Values& values, const RunContext& context) {
    std::vector<Tensor> inputs;
    for (size_t i = 0; i < step.inputs.size(); ++i) {
      inputs.push_back(values.at(step.inputs[i]));
      inputs.back().name = step.model_inputs[i];
    }
    PERCH_RETURN_IF_ERROR(ValidateInputs(model.signature(), model.config().max_batch_size, inputs));
    model.requests.Increment();
    const auto started = Clock::now();
    auto outputs = model.session().RunWithContext(inputs, step.model_outputs, context);
    model.compute_seconds.Observe(std::chrono::duration<double>(Clock::now() - started).count());
    if (!outputs.ok()) {
      model.failures.Increment();
    }
    return outputs;
  }

  Result<Tensor> RunOperation(const Step& step, const Values& values, StreamState* stream) const {
    std::vector<const Tensor*> in;
    for (const auto& name : step.inputs) {
      in.push_back(&values.at(name));
    }
    switch (step.op) {
      case Op::kCast:
        return pipeline::Cast(*in.front(), step.datatype);
      case Op::kScale:
        return pipeline::ScaleOffset(*in.front(), step.scale, step.offset);
      case Op::kReshape:
        return pipeline::Reshape(*in.front(), step.shape);
      case Op::kSlice:
        return pipeline::Slice(*in.front(), step.axis, step.begin, step.end);
      case Op::kConcat:
        return pipeline::Concat(in, step.axis);
      case Op::kConstant:
        return step.constant;
      case Op::kWindow: {
        auto& window = stream->tensors[step.name];
        if (window.data.empty()) {
          PERCH_ASSIGN_OR_RETURN(window, pipeline::Filled(step.window_spec.datatype,
                                                          step.window_spec.shape, step.fill));
        }
        PERCH_RETURN_IF_ERROR(pipeline::PushWindow(window, *in.front()));
        return window;
      }
      case Op::kState: {
        const auto carried = stream->tensors.find(step.name);
        if (carried != stream->tensors.end()) {
          return carried->second;
        }
        return pipeline::Filled(step.datatype, step.shape, step.fill);
      }
      case Op::kSwitch: {
        bool holds = false;
        for (const Tensor* condition : in) {
          holds = holds || pipeline::ElementAsDouble(*condition, 0) >= step.threshold;
        }
        Tensor branch{.name = {}, .datatype = DataType::kBytes, .shape = {1}, .data = {}};
        AppendBytesElement(branch.data, holds ? kBranchTaken : kBranchNotTaken);
        return branch;
      }
      case Op::kModel:
        break;
    }
    return Internal("a model step reached RunOperation");
  }

  const std::string name_;
  const PipelineSpec spec_;
  const std::vector<std::vector<size_t>> levels_;
  const StepModels steps_;
  ModelSignature signature_;
  StreamTable streams_;
  std::vector<StepMetrics> step_metrics_;
};

}  // namespace

Result<std::unique_ptr<Session>> LoadPipeline(const std::string& name, std::string_view model_json,
                                              StepModels steps, MetricsRegistry& metrics,
                                              const PipelineOptions& options) {
  PERCH_ASSIGN_OR_RETURN(PipelineSpec spec, pipeline::ParsePipeline(model_json));
  for (const Step& step : spec.steps) {
    if (step.op == Op::kModel && step.model == name) {
      return InvalidArgument(fmt::format("step '{}' runs the pipeline itself", step.name));
    }
  }
  PERCH_ASSIGN_OR_RETURN(auto levels, pipeline::Plan(spec, steps));
  std::unique_ptr<Session> session = std::make_unique<PipelineSession>(
      name, std::move(spec), std::move(levels), std::move(steps), metrics, options);
  return session;
}

PipelineLoader MakePipelineLoader(MetricsRegistry& metrics, PipelineOptions options) {
  return [&metrics, options](const ModelManager& models, const ModelOnDisk& model,
                             int64_t /*version*/) -> Result<std::unique_ptr<Session>> {
    StepModels steps = [&models](std::string_view name, std::string_view version) {
      return models.Acquire(name, version);
    };
    return LoadPipeline(model.name, *model.config.pipeline, std::move(steps), metrics, options);
  };
}

}  // namespace perch
