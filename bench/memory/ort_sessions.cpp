// Baseline for the many-models benchmark: N bare ONNX Runtime sessions of
// one small model in one process, sharing one thread pool, each run once.
//
// One Ort::Env with a global intra-op pool (--threads, 0 = one per core);
// every session with DisablePerSessionThreads, ORT_ENABLE_ALL and otherwise
// ONNX Runtime's defaults, loaded from the file as a user's program would;
// each run once on zero inputs (dynamic dimensions = 1). Prints one JSON
// line: the sessions, the seconds it took, VmRSS and VmHWM in KiB.
//
//   bench_memory_ort_sessions --model FILE --count 500 [--threads N]
#include <onnxruntime_cxx_api.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

namespace {

long StatusKib(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const size_t length = std::strlen(field);
  while (std::getline(in, line)) {
    if (line.compare(0, length, field) == 0 && line.size() > length && line[length] == ':') {
      return std::strtol(line.c_str() + length + 1, nullptr, 10);
    }
  }
  return -1;
}

size_t ElementSize(ONNXTensorElementDataType type) {
  switch (type) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64:
      return 8;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16:
      return 2;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8:
      return 1;
    default:
      return 4;
  }
}

void RunOnce(Ort::Session& session) {
  Ort::AllocatorWithDefaultOptions allocator;
  const auto memory = Ort::MemoryInfo::CreateCpu(OrtDeviceAllocator, OrtMemTypeCPU);
  std::vector<std::string> input_names;
  std::vector<std::vector<char>> buffers;
  std::vector<Ort::Value> inputs;
  for (size_t i = 0; i < session.GetInputCount(); ++i) {
    input_names.push_back(session.GetInputNameAllocated(i, allocator).get());
    const Ort::TypeInfo type_info = session.GetInputTypeInfo(i);  // owns what `info` reads
    const auto info = type_info.GetTensorTypeAndShapeInfo();
    std::vector<int64_t> shape = info.GetShape();
    size_t count = 1;
    for (auto& dim : shape) {
      dim = dim < 0 ? 1 : dim;
      count *= static_cast<size_t>(dim);
    }
    buffers.emplace_back(count * ElementSize(info.GetElementType()), '\0');
    inputs.push_back(Ort::Value::CreateTensor(memory, buffers.back().data(), buffers.back().size(),
                                              shape.data(), shape.size(), info.GetElementType()));
  }
  std::vector<std::string> output_names;
  for (size_t i = 0; i < session.GetOutputCount(); ++i) {
    output_names.push_back(session.GetOutputNameAllocated(i, allocator).get());
  }
  std::vector<const char*> in_ptrs;
  std::vector<const char*> out_ptrs;
  for (const auto& name : input_names) in_ptrs.push_back(name.c_str());
  for (const auto& name : output_names) out_ptrs.push_back(name.c_str());
  session.Run(Ort::RunOptions{nullptr}, in_ptrs.data(), inputs.data(), inputs.size(),
              out_ptrs.data(), out_ptrs.size());
}

}  // namespace

int main(int argc, char** argv) {
  // As perch's main does: no ONNX Runtime telemetry, on both sides alike.
  setenv("ORT_DISABLE_TELEMETRY", "1", /*overwrite=*/0);
  std::string model;
  int count = 500;
  int threads = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--model") {
      model = argv[i + 1];
    } else if (flag == "--count") {
      count = std::atoi(argv[i + 1]);
    } else if (flag == "--threads") {
      threads = std::atoi(argv[i + 1]);
    } else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  if (model.empty() || count <= 0) {
    std::fprintf(stderr, "usage: bench_memory_ort_sessions --model FILE --count N [--threads N]\n");
    return 2;
  }
  const auto start = std::chrono::steady_clock::now();
  try {
    Ort::ThreadingOptions threading;
    threading.SetGlobalIntraOpNumThreads(threads);
    threading.SetGlobalInterOpNumThreads(1);
    Ort::Env env(threading, ORT_LOGGING_LEVEL_WARNING, "bare");
    std::vector<std::unique_ptr<Ort::Session>> sessions;
    for (int i = 0; i < count; ++i) {
      Ort::SessionOptions options;
      options.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
      options.DisablePerSessionThreads();
      sessions.push_back(std::make_unique<Ort::Session>(env, model.c_str(), options));
      RunOnce(*sessions.back());
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("{\"sessions\": %d, \"seconds\": %.3f, \"rss_kib\": %ld, \"hwm_kib\": %ld}\n",
                count, seconds, StatusKib("VmRSS"), StatusKib("VmHWM"));
  } catch (const Ort::Exception& error) {
    std::fprintf(stderr, "ONNX Runtime: %s\n", error.what());
    return 1;
  }
  return 0;
}
