// ONNX Runtime behind perch's Engine interface. ONNX Runtime's C++ API
// throws Ort::Exception; every call into it is wrapped here so that only
// Status values leave this file.
#include <fmt/format.h>
#include <onnxruntime_cxx_api.h>

#include <array>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <string_view>
#include <system_error>

#include "core/thread_annotations.h"
#include "engine/engine.h"
#include "engine/execution_providers.h"
#include "engine/onnx_external_data.h"

namespace perch {
namespace {

namespace fs = std::filesystem;

struct TypePair {
  ONNXTensorElementDataType onnx;
  DataType perch;
};

constexpr std::array<TypePair, 14> kTypes{{
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL, DataType::kBool},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, DataType::kUint8},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16, DataType::kUint16},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32, DataType::kUint32},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64, DataType::kUint64},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8, DataType::kInt8},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16, DataType::kInt16},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32, DataType::kInt32},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64, DataType::kInt64},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16, DataType::kFp16},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16, DataType::kBf16},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, DataType::kFp32},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE, DataType::kFp64},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING, DataType::kBytes},
}};

std::optional<DataType> FromOnnx(ONNXTensorElementDataType type) {
  for (const auto& pair : kTypes) {
    if (pair.onnx == type) {
      return pair.perch;
    }
  }
  return std::nullopt;
}

ONNXTensorElementDataType ToOnnx(DataType type) {
  for (const auto& pair : kTypes) {
    if (pair.perch == type) {
      return pair.onnx;
    }
  }
  return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
}

Status FromOrtException(const Ort::Exception& error, std::string_view doing) {
  const std::string message = fmt::format("{}: {}", doing, error.what());
  switch (error.GetOrtErrorCode()) {
    case ORT_INVALID_ARGUMENT:
    case ORT_INVALID_GRAPH:
    case ORT_INVALID_PROTOBUF:
    case ORT_NO_MODEL:
    case ORT_NOT_IMPLEMENTED:
      return InvalidArgument(message);
    case ORT_NO_SUCHFILE:
      return NotFound(message);
    default:
      return Internal(message);
  }
}

// True when `path` (already canonical) is `root` or lies below it.
bool IsWithin(const fs::path& path, const fs::path& root) {
  const auto mismatch = std::mismatch(root.begin(), root.end(), path.begin(), path.end());
  return mismatch.first == root.end();
}

// A model file's bytes, read once and handed to ONNX Runtime. Not a
// std::string: that would zero every byte before the read overwrites it, a
// pass over the whole model that shows in the cold start.
struct ModelBytes {
  std::unique_ptr<char[]> data;
  size_t size = 0;

  std::string_view view() const { return {data.get(), size}; }
};

Result<ModelBytes> ReadModelFile(const fs::path& model_file, const fs::path& allowed_root) {
  std::error_code error;
  const fs::path root = fs::canonical(allowed_root, error);
  if (error) {
    return NotFound(fmt::format("model root {}: {}", allowed_root.string(), error.message()));
  }
  const fs::path file = fs::canonical(model_file, error);
  if (error) {
    return NotFound(fmt::format("model file {}: {}", model_file.string(), error.message()));
  }
  if (!IsWithin(file, root)) {
    return Status(StatusCode::kPermissionDenied,
                  fmt::format("model file {} resolves to {}, outside the repository {}",
                              model_file.string(), file.string(), root.string()));
  }
  if (!fs::is_regular_file(file, error)) {
    return InvalidArgument(fmt::format("model file {} is not a regular file", model_file.string()));
  }
  // One sized read: a character iterator takes ten times as long on a large model.
  const auto size = fs::file_size(file, error);
  std::ifstream in(file, std::ios::binary);
  ModelBytes bytes{.data = std::make_unique_for_overwrite<char[]>(error ? 0 : size),
                   .size = error ? 0 : size};
  if (error || !in.read(bytes.data.get(), static_cast<std::streamsize>(bytes.size))) {
    return Internal(fmt::format("reading {} failed", file.string()));
  }
  return bytes;
}

// Refuses a model whose external data would be read from outside `root`.
Status CheckExternalData(std::string_view model, const fs::path& model_file,
                         const fs::path& allowed_root) {
  PERCH_ASSIGN_OR_RETURN(const auto locations, ListOnnxExternalDataLocations(model));
  std::error_code error;
  const fs::path root = fs::canonical(allowed_root, error);
  const fs::path folder = fs::canonical(model_file, error).parent_path();
  for (const auto& location : locations) {
    const fs::path relative(location);
    const fs::path resolved = fs::weakly_canonical(folder / relative, error);
    if (location.empty() || relative.is_absolute() || error || !IsWithin(resolved, root)) {
      return Status(StatusCode::kPermissionDenied,
                    fmt::format("model {} names external data \"{}\" outside the repository; "
                                "external data must sit beside the model",
                                model_file.string(), location));
    }
  }
  return Status::Ok();
}

Result<TensorSpec> ReadSpec(const std::string& name, const Ort::TypeInfo& type_info) {
  if (type_info.GetONNXType() != ONNX_TYPE_TENSOR) {
    return InvalidArgument(
        fmt::format("'{}' is not a tensor (sequences, maps and optionals are not served)", name));
  }
  const auto tensor_info = type_info.GetTensorTypeAndShapeInfo();
  const auto datatype = FromOnnx(tensor_info.GetElementType());
  if (!datatype) {
    return InvalidArgument(
        fmt::format("'{}' has ONNX element type {}, which has no Open Inference "
                    "Protocol datatype",
                    name, static_cast<int>(tensor_info.GetElementType())));
  }
  return TensorSpec{.name = name, .datatype = *datatype, .shape = tensor_info.GetShape()};
}

class OnnxSession final : public Session {
 public:
  OnnxSession(Ort::Session session, ModelSignature signature)
      : session_(std::move(session)), signature_(std::move(signature)) {}

  const ModelSignature& Signature() const override { return signature_; }

  Result<std::vector<Tensor>> Run(const std::vector<Tensor>& inputs,
                                  const std::vector<std::string>& output_names) override {
    try {
      return RunOrThrow(inputs, output_names);
    } catch (const Ort::Exception& error) {
      return FromOrtException(error, "ONNX Runtime refused the request");
    } catch (const std::exception& error) {
      return Internal(fmt::format("inference failed: {}", error.what()));
    }
  }

 private:
  Result<std::vector<Tensor>> RunOrThrow(const std::vector<Tensor>& inputs,
                                         const std::vector<std::string>& output_names) {
    const auto memory = Ort::MemoryInfo::CreateCpu(OrtDeviceAllocator, OrtMemTypeCPU);
    std::vector<const char*> input_names;
    std::vector<Ort::Value> input_values;
    input_names.reserve(inputs.size());
    input_values.reserve(inputs.size());
    for (const Tensor& tensor : inputs) {
      input_names.push_back(tensor.name.c_str());
      input_values.push_back(ToOrtValue(tensor, memory));
    }
    std::vector<const char*> names;
    names.reserve(output_names.size());
    for (const auto& name : output_names) {
      names.push_back(name.c_str());
    }
    auto values = session_.Run(Ort::RunOptions{nullptr}, input_names.data(), input_values.data(),
                               input_values.size(), names.data(), names.size());
    std::vector<Tensor> outputs;
    outputs.reserve(values.size());
    for (size_t i = 0; i < values.size(); ++i) {
      PERCH_ASSIGN_OR_RETURN(auto tensor, FromOrtValue(output_names[i], values[i]));
      outputs.push_back(std::move(tensor));
    }
    return outputs;
  }

  Ort::Value ToOrtValue(const Tensor& tensor, const Ort::MemoryInfo& memory) {
    if (tensor.datatype != DataType::kBytes) {
      // ONNX Runtime reads inputs in place and never writes them.
      return Ort::Value::CreateTensor(memory, const_cast<char*>(tensor.data.data()),
                                      tensor.data.size(), tensor.shape.data(), tensor.shape.size(),
                                      ToOnnx(tensor.datatype));
    }
    Ort::AllocatorWithDefaultOptions allocator;
    auto value = Ort::Value::CreateTensor(allocator, tensor.shape.data(), tensor.shape.size(),
                                          ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING);
    const auto elements = SplitBytesElements(tensor.data, ElementCount(tensor.shape).value());
    for (size_t i = 0; i < elements->size(); ++i) {
      const std::string_view element = (*elements)[i];
      // Sized buffers keep embedded NUL bytes, which FillStringTensor would cut.
      char* buffer = value.GetResizedStringTensorElementBuffer(i, element.size());
      std::copy(element.begin(), element.end(), buffer);
    }
    return value;
  }

  static Result<Tensor> FromOrtValue(const std::string& name, const Ort::Value& value) {
    const auto info = value.GetTensorTypeAndShapeInfo();
    const auto datatype = FromOnnx(info.GetElementType());
    if (!datatype) {
      return Internal(fmt::format("output '{}' has an element type perch cannot return", name));
    }
    Tensor tensor{.name = name, .datatype = *datatype, .shape = info.GetShape(), .data = {}};
    const size_t count = info.GetElementCount();
    if (*datatype != DataType::kBytes) {
      const auto* bytes = static_cast<const char*>(value.GetTensorRawData());
      tensor.data.assign(bytes, count * ElementSize(*datatype));
      return tensor;
    }
    const size_t total = value.GetStringTensorDataLength();
    std::string content(total, '\0');
    std::vector<size_t> offsets(count);
    value.GetStringTensorContent(content.data(), total, offsets.data(), count);
    tensor.data.reserve(total + 4 * count);
    for (size_t i = 0; i < count; ++i) {
      const size_t end = i + 1 < count ? offsets[i + 1] : total;
      AppendBytesElement(tensor.data,
                         std::string_view(content).substr(offsets[i], end - offsets[i]));
    }
    return tensor;
  }

  Ort::Session session_;
  const ModelSignature signature_;
};

// Asks ONNX Runtime for a GPU or accelerator provider by perch's name of it
// (engine/execution_providers.h). Throws Ort::Exception when it cannot start.
void AppendExecutionProvider(Ort::SessionOptions& session_options, const std::string& name) {
  const OrtApi& api = Ort::GetApi();
  if (name == "cuda") {
    OrtCUDAProviderOptionsV2* cuda = nullptr;
    Ort::ThrowOnError(api.CreateCUDAProviderOptions(&cuda));
    const std::unique_ptr<OrtCUDAProviderOptionsV2, decltype(api.ReleaseCUDAProviderOptions)> owned(
        cuda, api.ReleaseCUDAProviderOptions);
    session_options.AppendExecutionProvider_CUDA_V2(*cuda);
  } else if (name == "tensorrt") {
    OrtTensorRTProviderOptionsV2* tensorrt = nullptr;
    Ort::ThrowOnError(api.CreateTensorRTProviderOptions(&tensorrt));
    const std::unique_ptr<OrtTensorRTProviderOptionsV2,
                          decltype(api.ReleaseTensorRTProviderOptions)>
        owned(tensorrt, api.ReleaseTensorRTProviderOptions);
    session_options.AppendExecutionProvider_TensorRT_V2(*tensorrt);
  } else if (name == "openvino") {
    session_options.AppendExecutionProvider("OpenVINO", {});
  } else if (name == "xnnpack") {
    session_options.AppendExecutionProvider("XNNPACK", {});
  }
}

// The environment (its thread pool, kernel registry and telemetry) is made
// by the first load, not at start-up: with no model it would be about half of
// an idle agent's memory, and made on the loading thread it overlaps the
// servers starting. Threading: Load is thread-safe; env_mutex_ guards the
// environment's creation only.
class OnnxEngine final : public Engine {
 public:
  OnnxEngine(const OnnxEngineOptions& options, Logger logger)
      : options_(options), logger_(std::move(logger)) {}

  Result<std::unique_ptr<Session>> Load(const fs::path& model_file, const fs::path& allowed_root,
                                        const SessionOptions& options) override {
    PERCH_ASSIGN_OR_RETURN(const ModelBytes bytes, ReadModelFile(model_file, allowed_root));
    PERCH_RETURN_IF_ERROR(CheckExternalData(bytes.view(), model_file, allowed_root));
    try {
      PERCH_ASSIGN_OR_RETURN(Ort::Env* const env, Environment());
      return LoadOrThrow(*env, bytes.view(), model_file, options);
    } catch (const Ort::Exception& error) {
      return FromOrtException(error,
                              fmt::format("ONNX Runtime cannot load {}", model_file.string()));
    } catch (const std::exception& error) {
      return Internal(fmt::format("loading {} failed: {}", model_file.string(), error.what()));
    }
  }

 private:
  Result<Ort::Env*> Environment() {
    MutexLock lock(env_mutex_);
    if (!env_) {
      try {
        Ort::ThreadingOptions threading;
        threading.SetGlobalIntraOpNumThreads(options_.intra_op_threads);
        threading.SetGlobalInterOpNumThreads(options_.inter_op_threads);
        env_.emplace(threading, ORT_LOGGING_LEVEL_WARNING, "perch");
      } catch (const Ort::Exception& error) {
        return FromOrtException(error, "starting ONNX Runtime failed");
      }
      logger_.Info("ONNX Runtime {} ready, shared thread pool of {} threads",
                   Ort::GetVersionString(),
                   options_.intra_op_threads > 0 ? std::to_string(options_.intra_op_threads)
                                                 : std::string("one per core"));
    }
    return &*env_;
  }

  Result<std::unique_ptr<Session>> LoadOrThrow(Ort::Env& env, std::string_view bytes,
                                               const fs::path& model_file,
                                               const SessionOptions& options) {
    PERCH_ASSIGN_OR_RETURN(
        const ExecutionProviderPlan plan,
        PlanExecutionProviders(options.execution_providers, Ort::GetAvailableProviders()));
    std::vector<std::string> passed_over = plan.skipped;
    // The model is handed over as bytes (already checked); its external data,
    // also checked, is found beside the file.
    const std::string folder = fs::canonical(model_file).parent_path().string();
    std::optional<Ort::Session> session;
    std::string provider;
    // Each candidate in turn: a provider in the build can still fail to
    // start (no driver, no device), and then the next one is tried.
    for (const std::string& candidate : plan.candidates) {
      Ort::SessionOptions session_options;
      session_options.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
      if (options.intra_op_threads > 0) {
        session_options.SetIntraOpNumThreads(options.intra_op_threads);
        session_options.SetInterOpNumThreads(1);
      } else {
        session_options.DisablePerSessionThreads();
      }
      session_options.AddConfigEntry("session.model_external_initializers_file_folder_path",
                                     folder.c_str());
      if (candidate == "cpu") {
        session.emplace(env, bytes.data(), bytes.size(), session_options);
        provider = candidate;
        break;
      }
      try {
        AppendExecutionProvider(session_options, candidate);
        session.emplace(env, bytes.data(), bytes.size(), session_options);
        provider = candidate;
        break;
      } catch (const Ort::Exception& error) {
        passed_over.push_back(fmt::format("{}: {}", candidate, error.what()));
      }
    }
    for (const std::string& reason : passed_over) {
      logger_.Warn("{}: execution provider passed over, {}", model_file.string(), reason);
    }
    if (!session) {
      return Unavailable(fmt::format("{}: no execution provider asked for could start ({})",
                                     model_file.string(), fmt::join(passed_over, "; ")));
    }
    if (!options.execution_providers.empty()) {
      logger_.Info("{}: runs on the {} execution provider", model_file.string(), provider);
    }

    ModelSignature signature;
    Ort::AllocatorWithDefaultOptions allocator;
    for (size_t i = 0; i < session->GetInputCount(); ++i) {
      const std::string name = session->GetInputNameAllocated(i, allocator).get();
      PERCH_ASSIGN_OR_RETURN(auto spec, ReadSpec(name, session->GetInputTypeInfo(i)));
      signature.inputs.push_back(std::move(spec));
    }
    for (size_t i = 0; i < session->GetOutputCount(); ++i) {
      const std::string name = session->GetOutputNameAllocated(i, allocator).get();
      PERCH_ASSIGN_OR_RETURN(auto spec, ReadSpec(name, session->GetOutputTypeInfo(i)));
      signature.outputs.push_back(std::move(spec));
    }
    logger_.Debug("loaded {} ({} inputs, {} outputs)", model_file.string(), signature.inputs.size(),
                  signature.outputs.size());
    return std::unique_ptr<Session>(
        std::make_unique<OnnxSession>(std::move(*session), std::move(signature)));
  }

  const OnnxEngineOptions options_;
  Logger logger_;
  Mutex env_mutex_;
  std::optional<Ort::Env> env_ GUARDED_BY(env_mutex_);
};

}  // namespace

std::string OnnxRuntimeVersion() { return Ort::GetVersionString(); }

std::vector<std::string> AvailableExecutionProviders() {
  std::vector<std::string> names;
  try {
    for (const std::string& provider : Ort::GetAvailableProviders()) {
      std::string name = provider;
      for (const ExecutionProviderName& known : KnownExecutionProviders()) {
        if (known.onnxruntime_name == provider) {
          name = std::string(known.name);
        }
      }
      names.push_back(std::move(name));
    }
  } catch (const Ort::Exception&) {
    // Only a broken ONNX Runtime fails here, and loading a model says why.
  }
  return names;
}

Result<std::unique_ptr<Engine>> CreateOnnxEngine(const OnnxEngineOptions& options, Logger logger) {
  return std::unique_ptr<Engine>(std::make_unique<OnnxEngine>(options, std::move(logger)));
}

}  // namespace perch
