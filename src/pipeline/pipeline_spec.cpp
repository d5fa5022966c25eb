#include "pipeline/pipeline_spec.h"

#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>

#include "core/enum_names.h"
#include "pipeline/operations.h"

namespace perch::pipeline {
namespace {

using nlohmann::json;

constexpr EnumNames<Op, 10> kOpNames{{
    {Op::kModel, "model"},
    {Op::kCast, "cast"},
    {Op::kScale, "scale"},
    {Op::kReshape, "reshape"},
    {Op::kSlice, "slice"},
    {Op::kConcat, "concat"},
    {Op::kWindow, "window"},
    {Op::kState, "state"},
    {Op::kConstant, "constant"},
    {Op::kSwitch, "switch"},
}};

constexpr size_t kMaxSteps = 256;

Status CheckKeys(const json& object, const std::string& where,
                 std::initializer_list<std::string_view> allowed) {
  for (const auto& [key, value] : object.items()) {
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
      return InvalidArgument(fmt::format("{} has unknown key \"{}\"; known keys: {}", where, key,
                                         fmt::join(allowed, ", ")));
    }
  }
  return Status::Ok();
}

Result<DataType> ParseDataType(const json& value, const std::string& where) {
  const auto datatype =
      value.is_string() ? DataTypeFromString(value.get<std::string>()) : std::nullopt;
  if (!datatype) {
    return InvalidArgument(fmt::format("{}: {} is not a datatype", where, value.dump()));
  }
  return *datatype;
}

Result<Shape> ParseShape(const json& value, const std::string& where, bool allow_unknown) {
  if (!value.is_array()) {
    return InvalidArgument(fmt::format("{}: dims must be an array of integers", where));
  }
  Shape shape;
  for (const json& dim : value) {
    if (!dim.is_number_integer() || dim.get<int64_t>() < (allow_unknown ? -1 : 0)) {
      return InvalidArgument(fmt::format("{}: {} is not a valid dim", where, dim.dump()));
    }
    shape.push_back(dim.get<int64_t>());
  }
  return shape;
}

Result<std::vector<TensorSpec>> ParseTensors(const json& root, const char* key) {
  std::vector<TensorSpec> specs;
  if (!root.contains(key) || !root[key].is_array() || root[key].empty()) {
    return InvalidArgument(
        fmt::format("a pipeline needs \"{}\": [{{\"name\", \"datatype\", \"dims\"}}, ...]", key));
  }
  for (const json& entry : root[key]) {
    const std::string where = fmt::format("pipeline {}", key);
    if (!entry.is_object() || !entry.contains("name") || !entry.contains("datatype") ||
        !entry.contains("dims") || !entry["name"].is_string()) {
      return InvalidArgument(
          fmt::format("{}: each needs \"name\", \"datatype\" and \"dims\"", where));
    }
    TensorSpec spec;
    spec.name = entry["name"].get<std::string>();
    PERCH_ASSIGN_OR_RETURN(spec.datatype, ParseDataType(entry["datatype"], where));
    PERCH_ASSIGN_OR_RETURN(spec.shape, ParseShape(entry["dims"], where, /*allow_unknown=*/true));
    specs.push_back(std::move(spec));
  }
  return specs;
}

std::vector<std::string> StringList(const json& value) {
  if (value.is_string()) {
    return {value.get<std::string>()};
  }
  return value.get<std::vector<std::string>>();
}

Result<Step> ParseStep(const json& entry) {
  if (!entry.is_object() || !entry.contains("name") || !entry["name"].is_string()) {
    return InvalidArgument("each step needs a \"name\"");
  }
  Step step;
  step.name = entry["name"].get<std::string>();
  const std::string where = fmt::format("step '{}'", step.name);
  if (entry.contains("model") == entry.contains("op")) {
    return InvalidArgument(fmt::format("{} needs either \"model\" or \"op\"", where));
  }
  if (entry.contains("model")) {
    PERCH_RETURN_IF_ERROR(
        CheckKeys(entry, where, {"name", "model", "version", "digest", "input_map", "output_map"}));
    step.model = entry["model"].get<std::string>();
    if (entry.contains("version")) {
      const json& version = entry["version"];
      step.version = version.is_string() ? version.get<std::string>() : version.dump();
    }
    if (!entry.contains("input_map") || !entry.contains("output_map")) {
      return InvalidArgument(fmt::format("{} needs \"input_map\" and \"output_map\"", where));
    }
    for (const auto& [model_name, name] : entry["input_map"].items()) {
      step.model_inputs.push_back(model_name);
      step.inputs.push_back(name.get<std::string>());
    }
    for (const auto& [model_name, name] : entry["output_map"].items()) {
      step.model_outputs.push_back(model_name);
      step.outputs.push_back(name.get<std::string>());
    }
    return step;
  }
  const auto op = OpFromString(entry["op"].get<std::string>());
  if (!op || *op == Op::kModel) {
    return InvalidArgument(fmt::format(
        "{}: op {} is unknown; use cast, scale, reshape, slice, concat, window, state, constant "
        "or switch",
        where, entry["op"].dump()));
  }
  step.op = *op;
  PERCH_RETURN_IF_ERROR(
      CheckKeys(entry, where,
                {"name", "op", "input", "inputs", "output", "datatype", "dims", "scale", "offset",
                 "fill", "threshold", "axis", "begin", "end", "frames", "from", "data", "then"}));
  if (entry.contains("input")) {
    step.inputs = StringList(entry["input"]);
  } else if (entry.contains("inputs")) {
    step.inputs = StringList(entry["inputs"]);
  }
  if (!entry.contains("output")) {
    return InvalidArgument(fmt::format("{} needs an \"output\"", where));
  }
  step.outputs = {entry["output"].get<std::string>()};
  const bool takes_none = step.op == Op::kState || step.op == Op::kConstant;
  const bool takes_many = step.op == Op::kConcat || step.op == Op::kSwitch;
  if (takes_none ? !step.inputs.empty()
                 : (step.inputs.empty() || (!takes_many && step.inputs.size() != 1))) {
    return InvalidArgument(fmt::format("{}: op {} takes {}", where, ToString(step.op),
                                       takes_none   ? "no input"
                                       : takes_many ? "\"inputs\": [...]"
                                                    : "one \"input\""));
  }
  auto require = [&](const char* key) -> Status {
    if (!entry.contains(key)) {
      return InvalidArgument(fmt::format("{}: op {} needs \"{}\"", where, ToString(step.op), key));
    }
    return Status::Ok();
  };
  step.scale = entry.value("scale", 1.0);
  step.offset = entry.value("offset", 0.0);
  step.fill = entry.value("fill", 0.0);
  step.threshold = entry.value("threshold", 0.5);
  step.axis = entry.value("axis", int64_t{0});
  switch (step.op) {
    case Op::kCast: {
      PERCH_RETURN_IF_ERROR(require("datatype"));
      PERCH_ASSIGN_OR_RETURN(step.datatype, ParseDataType(entry["datatype"], where));
      break;
    }
    case Op::kReshape: {
      PERCH_RETURN_IF_ERROR(require("dims"));
      PERCH_ASSIGN_OR_RETURN(step.shape, ParseShape(entry["dims"], where, true));
      break;
    }
    case Op::kSlice: {
      PERCH_RETURN_IF_ERROR(require("begin"));
      PERCH_RETURN_IF_ERROR(require("end"));
      step.begin = entry["begin"].get<int64_t>();
      step.end = entry["end"].get<int64_t>();
      break;
    }
    case Op::kWindow: {
      PERCH_RETURN_IF_ERROR(require("frames"));
      step.frames = entry["frames"].get<int64_t>();
      if (step.frames < 1 || step.frames > (1 << 20)) {
        return InvalidArgument(fmt::format("{}: \"frames\" must be from 1 to 1048576", where));
      }
      break;
    }
    case Op::kState: {
      PERCH_RETURN_IF_ERROR(require("datatype"));
      PERCH_RETURN_IF_ERROR(require("dims"));
      PERCH_RETURN_IF_ERROR(require("from"));
      PERCH_ASSIGN_OR_RETURN(step.datatype, ParseDataType(entry["datatype"], where));
      PERCH_ASSIGN_OR_RETURN(step.shape, ParseShape(entry["dims"], where, false));
      step.from = entry["from"].get<std::string>();
      break;
    }
    case Op::kConstant: {
      PERCH_RETURN_IF_ERROR(require("datatype"));
      PERCH_RETURN_IF_ERROR(require("dims"));
      PERCH_RETURN_IF_ERROR(require("data"));
      PERCH_ASSIGN_OR_RETURN(step.datatype, ParseDataType(entry["datatype"], where));
      PERCH_ASSIGN_OR_RETURN(step.shape, ParseShape(entry["dims"], where, false));
      const auto values = entry["data"].get<std::vector<double>>();
      PERCH_ASSIGN_OR_RETURN(const int64_t count, ElementCount(step.shape));
      if (static_cast<int64_t>(values.size()) != count || !IsComputable(step.datatype)) {
        return InvalidArgument(fmt::format("{}: \"data\" must hold {} numbers", where, count));
      }
      step.constant =
          Tensor{.name = {}, .datatype = step.datatype, .shape = step.shape, .data = {}};
      for (double value : values) {
        PERCH_ASSIGN_OR_RETURN(Tensor one, Filled(step.datatype, {}, value));
        step.constant.data += one.data;
      }
      break;
    }
    case Op::kSwitch: {
      PERCH_RETURN_IF_ERROR(require("then"));
      step.then = StringList(entry["then"]);
      break;
    }
    case Op::kModel:
    case Op::kScale:
    case Op::kConcat:
      break;
  }
  return step;
}

bool Compatible(const Shape& a, const Shape& b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] >= 0 && b[i] >= 0 && a[i] != b[i]) {
      return false;
    }
  }
  return true;
}

bool FullyKnown(const Shape& shape) {
  return std::all_of(shape.begin(), shape.end(), [](int64_t dim) { return dim >= 0; });
}

// The specs of a built-in step's outputs from its inputs' specs.
Result<TensorSpec> InferOutput(Step& step, const std::vector<const TensorSpec*>& in) {
  const std::string where = fmt::format("step '{}' ({})", step.name, ToString(step.op));
  for (const TensorSpec* spec : in) {
    if (!IsComputable(spec->datatype) && step.op != Op::kSwitch) {
      return InvalidArgument(fmt::format("{} cannot take '{}', a {} tensor", where, spec->name,
                                         ToString(spec->datatype)));
    }
  }
  TensorSpec out = in.empty() ? TensorSpec{} : *in.front();
  out.name = step.outputs.front();
  switch (step.op) {
    case Op::kCast:
      if (!IsComputable(step.datatype)) {
        return InvalidArgument(fmt::format("{} cannot cast to {}", where, ToString(step.datatype)));
      }
      out.datatype = step.datatype;
      break;
    case Op::kScale:
      if (out.datatype != DataType::kFp32 && out.datatype != DataType::kFp64) {
        return InvalidArgument(fmt::format("{} takes FP32 or FP64, not {} '{}'; cast it first",
                                           where, ToString(out.datatype), in.front()->name));
      }
      break;
    case Op::kReshape: {
      out.shape = step.shape;
      if (FullyKnown(in.front()->shape)) {
        Tensor probe{
            .name = {}, .datatype = DataType::kUint8, .shape = in.front()->shape, .data = {}};
        PERCH_ASSIGN_OR_RETURN(const int64_t count, ElementCount(probe.shape));
        probe.data.resize(static_cast<size_t>(count));
        auto reshaped = Reshape(probe, step.shape);
        if (!reshaped.ok()) {
          return InvalidArgument(
              fmt::format("{}: {} '{}'", where, reshaped.status().message(), in.front()->name));
        }
        out.shape = reshaped->shape;
      }
      break;
    }
    case Op::kSlice: {
      const Shape& shape = in.front()->shape;
      if (step.axis < 0 || step.axis >= static_cast<int64_t>(shape.size())) {
        return InvalidArgument(fmt::format("{}: axis {} is outside '{}' of shape {}", where,
                                           step.axis, in.front()->name, ShapeToString(shape)));
      }
      const int64_t size = shape[static_cast<size_t>(step.axis)];
      if (size >= 0) {
        const int64_t first = step.begin < 0 ? size + step.begin : step.begin;
        const int64_t last = step.end < 0 ? size + step.end : std::min(step.end, size);
        if (first < 0 || first >= last) {
          return InvalidArgument(fmt::format("{}: [{}, {}) is empty in dim {} of size {}", where,
                                             step.begin, step.end, step.axis, size));
        }
        out.shape[static_cast<size_t>(step.axis)] = last - first;
      }
      break;
    }
    case Op::kConcat: {
      const size_t axis = static_cast<size_t>(step.axis);
      if (step.axis < 0 || axis >= out.shape.size()) {
        return InvalidArgument(fmt::format("{}: axis {} is outside shape {}", where, step.axis,
                                           ShapeToString(out.shape)));
      }
      for (size_t i = 1; i < in.size(); ++i) {
        Shape a = in[i]->shape;
        Shape b = in.front()->shape;
        if (a.size() == b.size()) {
          a[axis] = b[axis] = -1;
        }
        if (in[i]->datatype != out.datatype || !Compatible(a, b)) {
          return InvalidArgument(
              fmt::format("{} cannot join {} {} '{}' and {} {} '{}'", where, ToString(out.datatype),
                          ShapeToString(in.front()->shape), in.front()->name,
                          ToString(in[i]->datatype), ShapeToString(in[i]->shape), in[i]->name));
        }
        const int64_t dim = in[i]->shape[axis];
        out.shape[axis] = out.shape[axis] < 0 || dim < 0 ? -1 : out.shape[axis] + dim;
      }
      break;
    }
    case Op::kWindow:
      // Each request may bring any number of rows; the rest is fixed.
      if (out.shape.empty() || !FullyKnown(Shape(out.shape.begin() + 1, out.shape.end()))) {
        return InvalidArgument(fmt::format("{} needs fixed dims after the first, not {} '{}'",
                                           where, ShapeToString(out.shape), in.front()->name));
      }
      out.shape[0] = step.frames;
      step.window_spec = out;
      break;
    case Op::kState:
    case Op::kConstant:
      out.datatype = step.datatype;
      out.shape = step.shape;
      break;
    case Op::kSwitch:
      for (const TensorSpec* spec : in) {
        const auto count = FullyKnown(spec->shape) ? ElementCount(spec->shape) : Result<int64_t>(0);
        if (!IsComputable(spec->datatype) || !count.ok() || *count != 1) {
          return InvalidArgument(fmt::format(
              "{}: condition input '{}' must be a numeric scalar (one element), not {} {}", where,
              spec->name, ToString(spec->datatype), ShapeToString(spec->shape)));
        }
      }
      out.datatype = DataType::kBytes;
      out.shape = {1};
      break;
    case Op::kModel:
      break;
  }
  return out;
}

}  // namespace

std::string_view ToString(Op op) { return EnumToString(kOpNames, op); }
std::optional<Op> OpFromString(std::string_view name) { return EnumFromString(kOpNames, name); }

Result<PipelineSpec> ParsePipeline(std::string_view model_json) {
  const json root = json::parse(model_json, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) {
    return InvalidArgument("model.json is not a JSON object");
  }
  try {
    PipelineSpec spec;
    PERCH_ASSIGN_OR_RETURN(spec.inputs, ParseTensors(root, "inputs"));
    PERCH_ASSIGN_OR_RETURN(spec.outputs, ParseTensors(root, "outputs"));
    if (!root.contains("steps") || !root["steps"].is_array() || root["steps"].empty() ||
        root["steps"].size() > kMaxSteps) {
      return InvalidArgument(
          fmt::format("a pipeline needs \"steps\": an array of 1 to {} steps", kMaxSteps));
    }
    std::set<std::string> names;
    for (const json& entry : root["steps"]) {
      PERCH_ASSIGN_OR_RETURN(Step step, ParseStep(entry));
      if (!names.insert(step.name).second) {
        return InvalidArgument(fmt::format("two steps are named '{}'", step.name));
      }
      spec.steps.push_back(std::move(step));
    }
    if (root.contains("streams")) {
      const json& streams = root["streams"];
      if (streams.is_object() && streams.contains("input")) {
        return InvalidArgument(
            "\"streams\": \"input\" is gone: a stream is named by a request parameter "
            "(\"parameter\", default \"stream_id\"), not by an input tensor; drop \"input\" "
            "and the BYTES input it named");
      }
      PERCH_RETURN_IF_ERROR(
          CheckKeys(streams, "streams", {"parameter", "max_streams", "idle_seconds"}));
      spec.stream_parameter = streams.value("parameter", spec.stream_parameter);
      if (!CheckInferParameterName(spec.stream_parameter).ok() ||
          IsTransportParameter(spec.stream_parameter)) {
        return InvalidArgument(fmt::format(
            "\"streams\": \"parameter\" must be a parameter name of 1 to {} bytes, other than "
            "timeout and binary_data_output",
            kMaxInferParameterNameBytes));
      }
      const auto max_streams = streams.value("max_streams", int64_t{1000});
      const auto idle_seconds = streams.value("idle_seconds", 600.0);
      if (max_streams < 1 || max_streams > 1'000'000 || idle_seconds <= 0) {
        return InvalidArgument(
            "\"streams\": max_streams must be from 1 to 1000000, idle_seconds above 0");
      }
      spec.stream_limits.max_streams = static_cast<size_t>(max_streams);
      spec.stream_limits.idle_timeout =
          std::chrono::milliseconds(static_cast<int64_t>(idle_seconds * 1000));
    }
    return spec;
  } catch (const json::exception& error) {
    return InvalidArgument(fmt::format("pipeline model.json: {}", error.what()));
  }
}

Result<std::vector<std::vector<size_t>>> Plan(PipelineSpec& spec, const StepModels& steps) {
  constexpr size_t kInput = SIZE_MAX;
  std::map<std::string, size_t> producer;
  auto produce = [&](const std::string& tensor, size_t step) -> Status {
    const auto [at, added] = producer.emplace(tensor, step);
    if (!added) {
      const auto by = [&](size_t index) {
        return index == kInput ? std::string("the pipeline's inputs")
                               : fmt::format("step '{}'", spec.steps[index].name);
      };
      return InvalidArgument(fmt::format("tensor '{}' is produced twice: by {} and by {}", tensor,
                                         by(at->second), by(step)));
    }
    return Status::Ok();
  };
  for (const auto& input : spec.inputs) {
    PERCH_RETURN_IF_ERROR(produce(input.name, kInput));
  }
  std::map<std::string, size_t> by_name;
  for (size_t i = 0; i < spec.steps.size(); ++i) {
    by_name[spec.steps[i].name] = i;
    for (const auto& output : spec.steps[i].outputs) {
      PERCH_RETURN_IF_ERROR(produce(output, i));
    }
  }
  bool stateful = false;
  for (size_t i = 0; i < spec.steps.size(); ++i) {
    Step& step = spec.steps[i];
    stateful = stateful || step.op == Op::kWindow || step.op == Op::kState;
    for (const auto& input : step.inputs) {
      const auto found = producer.find(input);
      if (found == producer.end()) {
        return InvalidArgument(fmt::format(
            "step '{}' reads tensor '{}', which no step or input produces", step.name, input));
      }
      if (found->second != kInput) {
        step.deps.push_back(found->second);
      }
    }
    if (step.op == Op::kState && !producer.contains(step.from)) {
      return InvalidArgument(fmt::format(
          "state step '{}' carries tensor '{}', which nothing produces", step.name, step.from));
    }
    for (const auto& gated : step.then) {
      const auto target = by_name.find(gated);
      if (target == by_name.end()) {
        return InvalidArgument(
            fmt::format("switch '{}' names step '{}', which does not exist", step.name, gated));
      }
      spec.steps[target->second].deps.push_back(i);
      spec.steps[target->second].gate = i;
    }
  }
  spec.stateful = stateful;
  // Kahn's algorithm, by levels.
  std::vector<size_t> level(spec.steps.size(), 0);
  std::vector<size_t> waiting(spec.steps.size());
  std::vector<std::vector<size_t>> dependents(spec.steps.size());
  for (size_t i = 0; i < spec.steps.size(); ++i) {
    waiting[i] = spec.steps[i].deps.size();
    for (size_t dep : spec.steps[i].deps) {
      dependents[dep].push_back(i);
    }
  }
  std::vector<size_t> order;
  for (size_t i = 0; i < spec.steps.size(); ++i) {
    if (waiting[i] == 0) {
      order.push_back(i);
    }
  }
  for (size_t next = 0; next < order.size(); ++next) {
    for (size_t dependent : dependents[order[next]]) {
      level[dependent] = std::max(level[dependent], level[order[next]] + 1);
      if (--waiting[dependent] == 0) {
        order.push_back(dependent);
      }
    }
  }
  if (order.size() != spec.steps.size()) {
    std::vector<std::string> cycle;
    for (size_t i = 0; i < spec.steps.size(); ++i) {
      if (waiting[i] > 0) {
        cycle.push_back(spec.steps[i].name);
      }
    }
    return InvalidArgument(fmt::format("the steps {} form a cycle", fmt::join(cycle, ", ")));
  }
  // Datatypes and shapes, in dependency order.
  std::map<std::string, TensorSpec> tensors;
  for (const auto& input : spec.inputs) {
    tensors[input.name] = input;
  }
  for (size_t index : order) {
    Step& step = spec.steps[index];
    std::vector<const TensorSpec*> in;
    for (const auto& input : step.inputs) {
      in.push_back(&tensors.at(input));
    }
    if (step.op != Op::kModel) {
      PERCH_ASSIGN_OR_RETURN(tensors[step.outputs.front()], InferOutput(step, in));
      continue;
    }
    auto model = steps(step.model, step.version);
    if (!model.ok()) {
      return Status(model.status().code(),
                    fmt::format("step '{}': {}", step.name, model.status().message()));
    }
    const ModelSignature& signature = (*model)->signature();
    for (const auto& spec_in : signature.inputs) {
      const auto at = std::find(step.model_inputs.begin(), step.model_inputs.end(), spec_in.name);
      if (at == step.model_inputs.end()) {
        return InvalidArgument(
            fmt::format("step '{}': input_map does not give model '{}' its input '{}'", step.name,
                        step.model, spec_in.name));
      }
      const TensorSpec& given = *in[static_cast<size_t>(at - step.model_inputs.begin())];
      if (given.datatype != spec_in.datatype || !Compatible(given.shape, spec_in.shape)) {
        return InvalidArgument(fmt::format(
            "step '{}': tensor '{}' is {} {} but model '{}' takes {} {} as '{}'", step.name,
            given.name, ToString(given.datatype), ShapeToString(given.shape), step.model,
            ToString(spec_in.datatype), ShapeToString(spec_in.shape), spec_in.name));
      }
    }
    for (size_t i = 0; i < step.model_inputs.size(); ++i) {
      const auto known =
          std::any_of(signature.inputs.begin(), signature.inputs.end(),
                      [&](const TensorSpec& t) { return t.name == step.model_inputs[i]; });
      if (!known) {
        return InvalidArgument(fmt::format("step '{}': model '{}' has no input '{}'", step.name,
                                           step.model, step.model_inputs[i]));
      }
    }
    for (size_t i = 0; i < step.model_outputs.size(); ++i) {
      const auto found =
          std::find_if(signature.outputs.begin(), signature.outputs.end(),
                       [&](const TensorSpec& t) { return t.name == step.model_outputs[i]; });
      if (found == signature.outputs.end()) {
        return InvalidArgument(fmt::format("step '{}': model '{}' has no output '{}'", step.name,
                                           step.model, step.model_outputs[i]));
      }
      tensors[step.outputs[i]] =
          TensorSpec{.name = step.outputs[i], .datatype = found->datatype, .shape = found->shape};
    }
  }
  for (const Step& step : spec.steps) {
    if (step.op == Op::kState) {
      const TensorSpec& from = tensors.at(step.from);
      if (from.datatype != step.datatype || !Compatible(from.shape, step.shape)) {
        return InvalidArgument(fmt::format("state step '{}' is {} {} but '{}' is {} {}", step.name,
                                           ToString(step.datatype), ShapeToString(step.shape),
                                           step.from, ToString(from.datatype),
                                           ShapeToString(from.shape)));
      }
    }
  }
  for (const auto& output : spec.outputs) {
    const auto found = tensors.find(output.name);
    if (found == tensors.end() || producer.at(output.name) == kInput) {
      return InvalidArgument(
          fmt::format("pipeline output '{}' is produced by no step", output.name));
    }
    if (found->second.datatype != output.datatype ||
        !Compatible(found->second.shape, output.shape)) {
      return InvalidArgument(
          fmt::format("pipeline output '{}' is declared {} {} but its step gives {} {}",
                      output.name, ToString(output.datatype), ShapeToString(output.shape),
                      ToString(found->second.datatype), ShapeToString(found->second.shape)));
    }
  }
  std::vector<std::vector<size_t>> levels;
  for (size_t index : order) {
    if (levels.size() <= level[index]) {
      levels.resize(level[index] + 1);
    }
    levels[level[index]].push_back(index);
  }
  return levels;
}

}  // namespace perch::pipeline
