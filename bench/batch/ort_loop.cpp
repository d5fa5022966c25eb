// Baseline for `perch batch`: a bare ONNX Runtime loop over N requests.
//
// Sets ONNX Runtime up as perch does (one Ort::Env with a global intra-op
// pool of --threads threads, 0 = one per core; inter-op pool of 1; the
// session with DisablePerSessionThreads and ORT_ENABLE_ALL), makes one
// input of --batch rows (dynamic dims replaced), and runs it back to back
// until --requests rows were scored, wrapping the input in place each time.
// No file is read and no answer is written: the floor a batch scorer can
// approach. Prints one JSON line; the runner times the whole process.
#include <onnxruntime_cxx_api.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

namespace {

[[noreturn]] void Usage(const char* error) {
  std::fprintf(stderr,
               "error: %s\nusage: bench_batch_ort_loop --model FILE [--threads N] "
               "[--requests N] [--batch B]\n",
               error);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  // As perch's main does: no ONNX Runtime telemetry, on both sides alike.
  setenv("ORT_DISABLE_TELEMETRY", "1", /*overwrite=*/0);
  std::string model;
  int threads = 0;
  long requests = 2000;
  long batch = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (i + 1 >= argc) {
      Usage(("missing value after " + arg).c_str());
    }
    const std::string value = argv[++i];
    if (arg == "--model") {
      model = value;
    } else if (arg == "--threads") {
      threads = std::stoi(value);
    } else if (arg == "--requests") {
      requests = std::stol(value);
    } else if (arg == "--batch") {
      batch = std::stol(value);
    } else {
      Usage(("unknown option " + arg).c_str());
    }
  }
  if (model.empty() || batch < 1 || requests < 1) {
    Usage("--model is required; --batch and --requests are positive");
  }
  const auto start = std::chrono::steady_clock::now();
  Ort::ThreadingOptions threading;
  threading.SetGlobalIntraOpNumThreads(threads);
  threading.SetGlobalInterOpNumThreads(1);
  Ort::Env env(threading, ORT_LOGGING_LEVEL_WARNING, "bench");
  Ort::SessionOptions options;
  options.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
  options.DisablePerSessionThreads();
  Ort::Session session(env, model.c_str(), options);

  Ort::AllocatorWithDefaultOptions allocator;
  const std::string input_name = session.GetInputNameAllocated(0, allocator).get();
  const std::string output_name = session.GetOutputNameAllocated(0, allocator).get();
  const Ort::TypeInfo type_info = session.GetInputTypeInfo(0);
  auto shape = type_info.GetTensorTypeAndShapeInfo().GetShape();
  size_t count = 1;
  for (auto& dim : shape) {
    if (dim < 0) {
      dim = batch;
    }
    count *= static_cast<size_t>(dim);
  }
  std::vector<float> data(count);
  std::mt19937 random(42);
  std::uniform_real_distribution<float> uniform(0.0F, 1.0F);
  for (auto& value : data) {
    value = uniform(random);
  }
  const char* input_names[] = {input_name.c_str()};
  const char* output_names[] = {output_name.c_str()};
  const auto memory = Ort::MemoryInfo::CreateCpu(OrtDeviceAllocator, OrtMemTypeCPU);
  const auto loaded = std::chrono::steady_clock::now();
  long scored = 0;
  while (scored < requests) {
    Ort::Value value =
        Ort::Value::CreateTensor(memory, data.data(), data.size(), shape.data(), shape.size());
    auto outputs = session.Run(Ort::RunOptions{nullptr}, input_names, &value, 1, output_names, 1);
    scored += batch;
  }
  const auto end = std::chrono::steady_clock::now();
  const double loop = std::chrono::duration<double>(end - loaded).count();
  std::printf(
      "{\"requests\":%ld,\"batch\":%ld,\"threads\":%d,\"load_seconds\":%.4f,"
      "\"loop_seconds\":%.4f,\"loop_per_second\":%.2f}\n",
      scored, batch, threads, std::chrono::duration<double>(loaded - start).count(), loop,
      static_cast<double>(scored) / loop);
  return 0;
}
