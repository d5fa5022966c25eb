// Baseline: ONNX Runtime called in-process, with no server in between.
//
// Sets ONNX Runtime up the way `perch serve` does (one Ort::Env with a global
// intra-op pool of --threads threads, 0 = one per core; inter-op pool of 1;
// sessions with DisablePerSessionThreads and ORT_ENABLE_ALL; inputs wrapped
// in place with CreateTensor over a caller buffer), then measures:
//   latency:    one thread running single inferences back to back (p50/p90/p99);
//               --gap-us N idles N µs between them, as a server does between requests
//   throughput: K threads sharing the session, each running inferences back
//               to back, for each K of --concurrency (infer/s)
// and prints one JSON object on stdout.
//
// --cold-start instead loads the model, runs one inference, prints one JSON
// line (load and first-inference times, VmRSS) and exits: the bare-program
// side of the cold-start comparison.
#include <onnxruntime_cxx_api.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  std::string model;
  int threads = 0;        // global intra-op pool; 0 = one per core (perch's default)
  int64_t batch = 1;      // replaces dynamic dimensions of the input
  double duration = 5.0;  // seconds per measurement
  double warmup = 1.0;    // seconds before each measurement
  std::vector<int> concurrency{1, 2, 4};
  bool cold_start = false;
  bool spin = true;  // ORT's default; --no-spin: pool threads block when idle
  int gap_us = 0;    // latency phase: idle time between inferences, as a server has
};

[[noreturn]] void Usage(const char* error) {
  std::fprintf(
      stderr,
      "error: %s\n"
      "usage: bench_ort_inprocess --model FILE [--threads N] [--batch B] [--duration S]\n"
      "                           [--warmup S] [--concurrency 1,2,4] [--no-spin] [--gap-us N]\n"
      "                           [--cold-start]\n",
      error);
  std::exit(2);
}

Options Parse(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        Usage(("missing value after " + arg).c_str());
      }
      return argv[++i];
    };
    if (arg == "--model") {
      options.model = value();
    } else if (arg == "--threads") {
      options.threads = std::stoi(value());
    } else if (arg == "--batch") {
      options.batch = std::stoll(value());
    } else if (arg == "--duration") {
      options.duration = std::stod(value());
    } else if (arg == "--warmup") {
      options.warmup = std::stod(value());
    } else if (arg == "--concurrency") {
      options.concurrency.clear();
      std::stringstream list(value());
      for (std::string item; std::getline(list, item, ',');) {
        options.concurrency.push_back(std::stoi(item));
      }
    } else if (arg == "--gap-us") {
      options.gap_us = std::stoi(value());
    } else if (arg == "--no-spin") {
      options.spin = false;
    } else if (arg == "--cold-start") {
      options.cold_start = true;
    } else {
      Usage(("unknown argument " + arg).c_str());
    }
  }
  if (options.model.empty()) {
    Usage("--model is required");
  }
  return options;
}

long RssKb() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmRSS:", 0) == 0) {
      return std::strtol(line.c_str() + 6, nullptr, 10);
    }
  }
  return -1;
}

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

double Percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) {
    return 0;
  }
  const auto rank = static_cast<size_t>(p / 100.0 * static_cast<double>(sorted.size() - 1) + 0.5);
  return sorted[std::min(rank, sorted.size() - 1)];
}

// One model input, filled with fixed pseudo-random data, kept alive for the run.
struct Input {
  std::string name;
  ONNXTensorElementDataType type;
  std::vector<int64_t> shape;
  std::vector<char> bytes;
};

size_t ElementSize(ONNXTensorElementDataType type) {
  switch (type) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32:
      return 4;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64:
      return 8;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16:
      return 2;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL:
      return 1;
    default:
      std::fprintf(stderr, "unsupported input element type %d\n", static_cast<int>(type));
      std::exit(1);
  }
}

class Runner {
 public:
  Runner(Ort::Env& env, const Options& options) {
    Ort::SessionOptions session_options;
    session_options.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
    session_options.DisablePerSessionThreads();
    session_ = Ort::Session(env, options.model.c_str(), session_options);
    Ort::AllocatorWithDefaultOptions allocator;
    std::mt19937 random(42);
    std::uniform_int_distribution<int> byte(0, 63);  // small positive values for any type
    for (size_t i = 0; i < session_.GetInputCount(); ++i) {
      Input input;
      input.name = session_.GetInputNameAllocated(i, allocator).get();
      const Ort::TypeInfo type_info = session_.GetInputTypeInfo(i);  // owns what `info` views
      const auto info = type_info.GetTensorTypeAndShapeInfo();
      input.type = info.GetElementType();
      input.shape = info.GetShape();
      size_t count = 1;
      for (auto& dim : input.shape) {
        if (dim < 0) {
          dim = options.batch;
        }
        count *= static_cast<size_t>(dim);
      }
      input.bytes.resize(count * ElementSize(input.type));
      if (input.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) {
        std::uniform_real_distribution<float> uniform(0.0F, 1.0F);
        auto* floats = reinterpret_cast<float*>(input.bytes.data());
        for (size_t k = 0; k < count; ++k) {
          floats[k] = uniform(random);
        }
      } else {
        for (auto& b : input.bytes) {
          b = static_cast<char>(byte(random) & 1);
        }
      }
      inputs_.push_back(std::move(input));
    }
    for (size_t i = 0; i < session_.GetOutputCount(); ++i) {
      output_storage_.push_back(session_.GetOutputNameAllocated(i, allocator).get());
    }
    for (const auto& input : inputs_) {
      input_names_.push_back(input.name.c_str());
    }
    for (const auto& name : output_storage_) {
      output_names_.push_back(name.c_str());
    }
  }

  // One inference, as perch's engine runs it: inputs wrapped in place.
  void RunOnce() {
    const auto memory = Ort::MemoryInfo::CreateCpu(OrtDeviceAllocator, OrtMemTypeCPU);
    std::vector<Ort::Value> values;
    values.reserve(inputs_.size());
    for (auto& input : inputs_) {
      values.push_back(Ort::Value::CreateTensor(memory, input.bytes.data(), input.bytes.size(),
                                                input.shape.data(), input.shape.size(),
                                                input.type));
    }
    auto outputs = session_.Run(Ort::RunOptions{nullptr}, input_names_.data(), values.data(),
                                values.size(), output_names_.data(), output_names_.size());
    if (outputs.size() != output_names_.size()) {
      std::fprintf(stderr, "unexpected output count\n");
      std::exit(1);
    }
  }

  size_t input_bytes() const {
    size_t total = 0;
    for (const auto& input : inputs_) {
      total += input.bytes.size();
    }
    return total;
  }

 private:
  Ort::Session session_{nullptr};
  std::vector<Input> inputs_;
  std::vector<std::string> output_storage_;
  std::vector<const char*> input_names_;
  std::vector<const char*> output_names_;
};

Ort::Env MakeEnv(int threads, bool spin) {
  Ort::ThreadingOptions threading;
  threading.SetGlobalIntraOpNumThreads(threads);
  threading.SetGlobalInterOpNumThreads(1);
  if (!spin) {
    threading.SetGlobalSpinControl(0);
  }
  return Ort::Env(threading, ORT_LOGGING_LEVEL_WARNING, "bench");
}

int ColdStart(const Options& options, Clock::time_point process_start) {
  const auto t0 = Clock::now();
  Ort::Env env = MakeEnv(options.threads, options.spin);
  const auto t1 = Clock::now();
  Runner runner(env, options);
  const auto t2 = Clock::now();
  runner.RunOnce();
  const auto t3 = Clock::now();
  std::printf(
      "{\"mode\":\"cold_start\",\"main_to_first_result_ms\":%.3f,\"env_ms\":%.3f,\"load_ms\":%.3f,"
      "\"first_infer_ms\":%.3f,\"static_init_ms\":%.3f,\"rss_kb\":%ld}\n",
      Ms(t3 - process_start), Ms(t1 - t0), Ms(t2 - t1), Ms(t3 - t2), Ms(t0 - process_start),
      RssKb());
  std::fflush(stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // As perch's main does: no ONNX Runtime telemetry, on both sides alike.
  setenv("ORT_DISABLE_TELEMETRY", "1", /*overwrite=*/0);
  const auto process_start = Clock::now();
  const Options options = Parse(argc, argv);
  try {
    if (options.cold_start) {
      return ColdStart(options, process_start);
    }
    Ort::Env env = MakeEnv(options.threads, options.spin);
    Runner runner(env, options);
    const auto warmup = std::chrono::duration<double>(options.warmup);
    const auto duration = std::chrono::duration<double>(options.duration);

    // Latency: one inference at a time.
    for (const auto until = Clock::now() + warmup; Clock::now() < until;) {
      runner.RunOnce();
    }
    std::vector<double> latencies;
    for (const auto until = Clock::now() + duration; Clock::now() < until;) {
      if (options.gap_us > 0) {
        std::this_thread::sleep_for(std::chrono::microseconds(options.gap_us));
      }
      const auto start = Clock::now();
      runner.RunOnce();
      latencies.push_back(Ms(Clock::now() - start));
    }
    std::sort(latencies.begin(), latencies.end());

    // Saturated throughput: K threads share the session.
    std::string throughput_json;
    for (const int k : options.concurrency) {
      std::atomic<bool> measuring{false};
      std::atomic<bool> stop{false};
      std::vector<size_t> counts(static_cast<size_t>(k), 0);
      std::vector<std::vector<double>> per_thread(static_cast<size_t>(k));
      std::vector<std::thread> threads;
      for (int t = 0; t < k; ++t) {
        threads.emplace_back([&, t] {
          while (!stop.load(std::memory_order_relaxed)) {
            const auto start = Clock::now();
            const bool counted = measuring.load(std::memory_order_relaxed);
            runner.RunOnce();
            if (counted && !stop.load(std::memory_order_relaxed)) {
              ++counts[static_cast<size_t>(t)];
              per_thread[static_cast<size_t>(t)].push_back(Ms(Clock::now() - start));
            }
          }
        });
      }
      std::this_thread::sleep_for(warmup);
      const auto from = Clock::now();
      measuring = true;
      std::this_thread::sleep_for(duration);
      stop = true;
      const double seconds = std::chrono::duration<double>(Clock::now() - from).count();
      for (auto& thread : threads) {
        thread.join();
      }
      size_t total = 0;
      std::vector<double> all;
      for (int t = 0; t < k; ++t) {
        total += counts[static_cast<size_t>(t)];
        all.insert(all.end(), per_thread[static_cast<size_t>(t)].begin(),
                   per_thread[static_cast<size_t>(t)].end());
      }
      std::sort(all.begin(), all.end());
      char item[256];
      std::snprintf(item, sizeof item,
                    "%s{\"concurrency\":%d,\"requests\":%zu,\"throughput\":%.3f,\"p50_ms\":%.4f,"
                    "\"p99_ms\":%.4f}",
                    throughput_json.empty() ? "" : ",", k, total,
                    static_cast<double>(total) / seconds, Percentile(all, 50), Percentile(all, 99));
      throughput_json += item;
    }
    std::printf(
        "{\"model\":\"%s\",\"threads\":%d,\"spin\":%s,\"gap_us\":%d,\"batch\":%lld,\"input_bytes\":"
        "%zu,"
        "\"latency\":{\"count\":%zu,\"p50_ms\":%.4f,\"p90_ms\":%.4f,\"p99_ms\":%.4f},"
        "\"throughput\":[%s]}\n",
        options.model.c_str(), options.threads, options.spin ? "true" : "false", options.gap_us,
        static_cast<long long>(options.batch), runner.input_bytes(), latencies.size(),
        Percentile(latencies, 50), Percentile(latencies, 90), Percentile(latencies, 99),
        throughput_json.c_str());
    return 0;
  } catch (const Ort::Exception& error) {
    std::fprintf(stderr, "ONNX Runtime: %s\n", error.what());
    return 1;
  }
}
