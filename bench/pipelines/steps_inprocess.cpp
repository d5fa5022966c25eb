// Baseline for the wakeword pipeline: its step models run one after the
// other in-process with ONNX Runtime, set up as perch sets it up (one
// Ort::Env with a global intra-op pool, ORT_ENABLE_ALL, no per-session
// threads), on the same windows the pipeline keeps: the sum of its steps.
// Prints one JSON line with the per-chunk wall times in microseconds of
// --chunks chunks, after --warmup chunks not timed (perch's side is warm
// too: run.py sends it chunks before it measures).
//
// Usage: bench_pipeline_steps --models DIR [--chunks N] [--warmup N] [--threads N]
#include <onnxruntime_cxx_api.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

namespace {

[[noreturn]] void Usage(const char* error) {
  std::fprintf(stderr,
               "error: %s\nusage: bench_pipeline_steps --models DIR [--chunks N] "
               "[--warmup N] [--threads N]\n",
               error);
  std::exit(2);
}

Ort::Value Tensor(std::vector<float>& data, std::vector<int64_t> shape) {
  const auto memory = Ort::MemoryInfo::CreateCpu(OrtDeviceAllocator, OrtMemTypeCPU);
  return Ort::Value::CreateTensor(memory, data.data(), data.size(), shape.data(), shape.size());
}

std::vector<float> Run(Ort::Session& session, std::vector<const char*> inputs,
                       std::vector<Ort::Value>& values, const char* output) {
  const char* outputs[] = {output};
  auto result = session.Run(Ort::RunOptions{nullptr}, inputs.data(), values.data(), values.size(),
                            outputs, 1);
  const auto count = result[0].GetTensorTypeAndShapeInfo().GetElementCount();
  const float* data = result[0].GetTensorData<float>();
  return {data, data + count};
}

void Push(std::vector<float>& window, const std::vector<float>& rows) {
  window.erase(window.begin(), window.begin() + static_cast<std::ptrdiff_t>(rows.size()));
  window.insert(window.end(), rows.begin(), rows.end());
}

}  // namespace

int main(int argc, char** argv) {
  // As perch's main does: no ONNX Runtime telemetry, on both sides alike.
  setenv("ORT_DISABLE_TELEMETRY", "1", /*overwrite=*/0);
  std::string dir;
  long chunks = 200;
  long warmup = 20;
  int threads = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (i + 1 >= argc) {
      Usage(("missing value after " + arg).c_str());
    }
    const std::string value = argv[++i];
    if (arg == "--models") {
      dir = value;
    } else if (arg == "--chunks") {
      chunks = std::stol(value);
    } else if (arg == "--warmup") {
      warmup = std::stol(value);
    } else if (arg == "--threads") {
      threads = std::stoi(value);
    } else {
      Usage(("unknown option " + arg).c_str());
    }
  }
  if (dir.empty() || chunks < 1 || warmup < 0) {
    Usage("--models is required; --chunks is positive, --warmup not negative");
  }
  Ort::ThreadingOptions threading;
  threading.SetGlobalIntraOpNumThreads(threads);
  threading.SetGlobalInterOpNumThreads(1);
  Ort::Env env(threading, ORT_LOGGING_LEVEL_WARNING, "bench");
  Ort::SessionOptions options;
  options.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
  options.DisablePerSessionThreads();
  auto load = [&](const char* name) {
    return Ort::Session(env, (dir + "/" + name + "/1/model.onnx").c_str(), options);
  };
  Ort::Session mel = load("melspectrogram");
  Ort::Session embedding = load("embedding_model");
  Ort::Session jarvis = load("hey_jarvis_v0.1");
  Ort::Session alexa = load("alexa_v0.1");
  Ort::Session vad = load("silero_vad");

  std::mt19937 random(42);
  std::uniform_real_distribution<float> uniform(-3000.0F, 3000.0F);
  std::vector<float> samples(1760, 0.0F);
  std::vector<float> mel_window(76 * 32, 1.0F);
  std::vector<float> embeddings(34 * 96, 0.0F);
  std::vector<float> h(2 * 64, 0.0F);
  std::vector<float> c(2 * 64, 0.0F);
  std::vector<long> micros;
  for (long chunk = 0; chunk < warmup + chunks; ++chunk) {
    std::vector<float> audio(1280);
    for (auto& sample : audio) {
      sample = static_cast<float>(static_cast<int16_t>(uniform(random)));
    }
    const auto started = std::chrono::steady_clock::now();
    Push(samples, audio);
    std::vector<Ort::Value> mel_in;
    mel_in.push_back(Tensor(samples, {1, 1760}));
    auto frames = Run(mel, {"input"}, mel_in, "output");
    for (auto& value : frames) {
      value = value * 0.1F + 2.0F;
    }
    Push(mel_window, frames);
    std::vector<Ort::Value> embedding_in;
    embedding_in.push_back(Tensor(mel_window, {1, 76, 32, 1}));
    Push(embeddings, Run(embedding, {"input_1"}, embedding_in, "conv2d_19"));
    std::vector<float> features(embeddings.end() - 16 * 96, embeddings.end());
    std::vector<Ort::Value> head_in;
    head_in.push_back(Tensor(features, {1, 16, 96}));
    Run(jarvis, {"x.1"}, head_in, "53");
    Run(alexa, {"onnx::Flatten_0"}, head_in, "13");
    std::vector<float> unit(audio);
    for (auto& value : unit) {
      value *= 1.0F / 32768.0F;
    }
    int64_t rate = 16000;
    const auto memory = Ort::MemoryInfo::CreateCpu(OrtDeviceAllocator, OrtMemTypeCPU);
    std::vector<Ort::Value> vad_in;
    vad_in.push_back(Tensor(unit, {1, 1280}));
    vad_in.push_back(Ort::Value::CreateTensor<int64_t>(memory, &rate, 1, nullptr, 0));
    vad_in.push_back(Tensor(h, {2, 1, 64}));
    vad_in.push_back(Tensor(c, {2, 1, 64}));
    const char* vad_inputs[] = {"input", "sr", "h", "c"};
    const char* vad_outputs[] = {"output", "hn", "cn"};
    auto state = vad.Run(Ort::RunOptions{nullptr}, vad_inputs, vad_in.data(), 4, vad_outputs, 3);
    std::copy_n(state[1].GetTensorData<float>(), h.size(), h.begin());
    std::copy_n(state[2].GetTensorData<float>(), c.size(), c.begin());
    if (chunk >= warmup) {
      micros.push_back(static_cast<long>(std::chrono::duration_cast<std::chrono::microseconds>(
                                             std::chrono::steady_clock::now() - started)
                                             .count()));
    }
  }
  std::printf("{\"chunks\":%ld,\"micros\":[", chunks);
  for (size_t i = 0; i < micros.size(); ++i) {
    std::printf("%s%ld", i == 0 ? "" : ",", micros[i]);
  }
  std::printf("]}\n");
  return 0;
}
