#include "batch/batch_runner.h"

#include <fmt/format.h>

#include <algorithm>
#include <condition_variable>
#include <istream>
#include <map>
#include <nlohmann/json.hpp>
#include <ostream>
#include <thread>

#include "core/files.h"
#include "core/thread_annotations.h"
#include "models/batching.h"
#include "tensor/json_codec.h"
#include "tensor/npy.h"

namespace perch {

namespace fs = std::filesystem;

struct BatchRunner::Item {
  std::string id;    // the id a record gets when its request names none
  std::string line;  // a JSON line; empty for a .npy file or a blank line
  fs::path npy;      // a .npy file
  uint64_t bytes = 0;
  bool blank = false;  // an empty line: no record
};

namespace {

bool HasBatchDim(const ModelSignature& signature, const ModelConfig& config) {
  if (config.max_batch_size > 0) {
    return true;
  }
  auto dynamic_first = [](const std::vector<TensorSpec>& specs) {
    return std::all_of(specs.begin(), specs.end(), [](const TensorSpec& spec) {
      return !spec.shape.empty() && spec.shape[0] == -1;
    });
  };
  return !signature.inputs.empty() && dynamic_first(signature.inputs) &&
         dynamic_first(signature.outputs);
}

// The id of a line that did not decode, if it is JSON with a string "id".
std::string IdOfUndecodable(const std::string& line) {
  const auto json = nlohmann::json::parse(line, nullptr, false);
  if (json.is_object() && json.contains("id") && json["id"].is_string()) {
    return json["id"].get<std::string>();
  }
  return "";
}

// Puts `inputs` in the model's input order; false when a name is unknown
// or repeated (validation then says which).
bool InModelOrder(const ModelSignature& signature, std::vector<Tensor>& inputs) {
  if (inputs.size() != signature.inputs.size()) {
    return false;
  }
  std::vector<Tensor> ordered;
  ordered.reserve(inputs.size());
  for (const auto& spec : signature.inputs) {
    const auto it = std::find_if(inputs.begin(), inputs.end(),
                                 [&](const Tensor& tensor) { return tensor.name == spec.name; });
    if (it == inputs.end()) {
      return false;
    }
    ordered.push_back(std::move(*it));
    inputs.erase(it);
  }
  inputs = std::move(ordered);
  return true;
}

int64_t RowsOf(const std::vector<Tensor>& inputs) {
  return inputs.empty() || inputs[0].shape.empty() ? -1 : inputs[0].shape[0];
}

}  // namespace

// Hands groups of items to `concurrency` threads and writes their records in
// input order. A group's sequence number is taken with the item it reads, so
// order is fixed at read time; at most a few groups per thread wait to be
// written, which bounds memory whatever the thread that lags.
class BatchRunner::Pipeline {
 public:
  // Fills the item; false at the end of the input.
  using Source = std::function<Result<bool>(Item&)>;

  Pipeline(const BatchRunner& runner, Source source, std::ostream& out,
           const BatchProgress& progress)
      : runner_(runner),
        source_(std::move(source)),
        out_(out),
        progress_(progress),
        threads_(std::max(1, runner.options_.concurrency)),
        window_(4 * threads_) {}

  Result<BatchCounts> Run() {
    {
      std::vector<std::jthread> workers;
      for (int i = 0; i < threads_; ++i) {
        workers.emplace_back([this] { Work(); });
      }
    }
    MutexLock lock(mutex_);
    if (!failure_.ok()) {
      return failure_;
    }
    out_.flush();
    if (!out_) {
      return Internal("cannot write the output (disk full?)");
    }
    return counts_;
  }

 private:
  void Work() EXCLUDES(mutex_) {
    const size_t group_size =
        runner_.batchable_ ? static_cast<size_t>(std::max(1, runner_.options_.max_batch)) : 1;
    for (;;) {
      std::vector<Item> items;
      int64_t sequence = 0;
      {
        MutexLock lock(mutex_);
        while (!stop_ && next_take_ - next_write_ >= window_) {
          lock.Wait(ready_);
        }
        if (stop_) {
          return;
        }
        while (items.size() < group_size) {
          Item item;
          auto more = source_(item);
          if (!more.ok()) {
            Fail(more.status());
            return;
          }
          if (!*more) {
            stop_ = true;
            break;
          }
          items.push_back(std::move(item));
        }
        if (items.empty()) {
          ready_.notify_all();
          return;
        }
        sequence = next_take_++;
      }
      std::vector<std::string> records = runner_.Process(items);
      uint64_t bytes = 0;
      for (const auto& item : items) {
        bytes += item.bytes;
      }
      MutexLock lock(mutex_);
      done_[sequence] = {std::move(records), bytes};
      WriteReady();
      ready_.notify_all();
    }
  }

  void WriteReady() REQUIRES(mutex_) {
    while (!done_.empty() && done_.begin()->first == next_write_) {
      auto& [records, bytes] = done_.begin()->second;
      for (const auto& record : records) {
        if (record.empty()) {
          continue;  // a blank line
        }
        out_.write(record.data(), static_cast<std::streamsize>(record.size()));
        out_.put('\n');
        ++counts_.records;
        counts_.errors += IsErrorRecord(record) ? 1 : 0;
      }
      bytes_done_ += bytes;
      done_.erase(done_.begin());
      ++next_write_;
      if (!out_) {
        Fail(Internal("cannot write the output (disk full?)"));
        return;
      }
      if (progress_) {
        progress_(bytes_done_);
      }
    }
  }

  void Fail(Status status) REQUIRES(mutex_) {
    if (failure_.ok()) {
      failure_ = std::move(status);
    }
    stop_ = true;
    ready_.notify_all();
  }

  const BatchRunner& runner_;
  const Source source_;
  std::ostream& out_;
  const BatchProgress& progress_;
  const int threads_;
  const int64_t window_;  // groups taken but not yet written, at most

  // Guards the source and the output too: reading and writing happen under it.
  Mutex mutex_;
  std::condition_variable ready_;              // a group was written, or the job stops
  int64_t next_take_ GUARDED_BY(mutex_) = 0;   // sequence of the next group read
  int64_t next_write_ GUARDED_BY(mutex_) = 0;  // sequence of the next group written
  // Groups processed out of turn: their records and input bytes.
  std::map<int64_t, std::pair<std::vector<std::string>, uint64_t>> done_ GUARDED_BY(mutex_);
  bool stop_ GUARDED_BY(mutex_) = false;  // the input ended, or the job failed
  Status failure_ GUARDED_BY(mutex_) = Status::Ok();
  BatchCounts counts_ GUARDED_BY(mutex_);
  uint64_t bytes_done_ GUARDED_BY(mutex_) = 0;
};

BatchRunner::BatchRunner(const InferenceService& inference, std::shared_ptr<LoadedModel> model,
                         ModelIdentity identity, BatchOptions options)
    : inference_(inference),
      model_(std::move(model)),
      identity_(std::move(identity)),
      options_(options),
      batchable_(HasBatchDim(model_->signature(), model_->config())) {}

bool BatchRunner::IsErrorRecord(std::string_view line) { return line.starts_with("{\"id\":"); }

Result<BatchCounts> BatchRunner::RunJsonLines(std::istream& in, std::ostream& out,
                                              const BatchProgress& progress) const {
  int64_t number = options_.first_line;
  Pipeline pipeline(
      *this,
      [&](Item& item) -> Result<bool> {
        if (!std::getline(in, item.line)) {
          if (in.bad()) {
            return Internal("cannot read the input");
          }
          return false;
        }
        item.bytes = item.line.size() + 1;
        if (!item.line.empty() && item.line.back() == '\r') {
          item.line.pop_back();
        }
        item.blank = item.line.find_first_not_of(" \t") == std::string::npos;
        item.id = std::to_string(number++);
        return true;
      },
      out, progress);
  return pipeline.Run();
}

Result<BatchCounts> BatchRunner::RunNpyFiles(const std::vector<fs::path>& files, std::ostream& out,
                                             const BatchProgress& progress) const {
  if (model_->signature().inputs.size() != 1) {
    return InvalidArgument(
        fmt::format("model '{}' has {} inputs; a folder of .npy files feeds a model with one "
                    "input: give JSON Lines instead",
                    identity_.name, model_->signature().inputs.size()));
  }
  size_t next = 0;
  Pipeline pipeline(
      *this,
      [&](Item& item) -> Result<bool> {
        if (next == files.size()) {
          return false;
        }
        const fs::path& file = files[next++];
        std::error_code error;
        item.npy = file;
        item.id = file.filename().string();
        item.bytes = fs::file_size(file, error);
        return true;
      },
      out, progress);
  return pipeline.Run();
}

std::vector<std::string> BatchRunner::Process(std::vector<Item>& items) const {
  std::vector<std::string> records(items.size());
  struct Decoded {
    size_t index;
    InferRequest request;
  };
  std::vector<Decoded> decoded;
  const ModelSignature& signature = model_->signature();
  for (size_t i = 0; i < items.size(); ++i) {
    Item& item = items[i];
    if (item.blank) {
      continue;
    }
    InferRequest request;
    if (!item.npy.empty()) {
      auto bytes = ReadFile(item.npy);
      auto tensor = bytes.ok() ? DecodeNpy(std::move(*bytes), signature.inputs[0].name)
                               : Result<Tensor>(bytes.status());
      if (!tensor.ok()) {
        records[i] = ErrorRecord(item.id, tensor.status().message());
        continue;
      }
      if (batchable_ && tensor->shape.size() + 1 == signature.inputs[0].shape.size()) {
        tensor->shape.insert(tensor->shape.begin(), 1);
      }
      request.inputs.push_back(std::move(tensor).value());
    } else {
      auto json = DecodeJsonInferRequest(item.line, "", options_.max_json_depth);
      if (!json.ok()) {
        const std::string id = IdOfUndecodable(item.line);
        records[i] = ErrorRecord(id.empty() ? item.id : id, json.status().message());
        continue;
      }
      request = std::move(json->request);
    }
    if (request.id.empty()) {
      request.id = item.id;
    }
    request.model_name = identity_.name;
    request.model_version = std::to_string(model_->version());
    decoded.push_back({i, std::move(request)});
  }

  auto run_one = [&](Decoded& one) {
    auto response = inference_.Infer(one.request);
    records[one.index] = response.ok() ? SuccessRecord(std::move(*response))
                                       : ErrorRecord(one.request.id, response.status().message());
  };
  const bool merge = batchable_ && options_.max_batch > 1;
  const int64_t max_rows = model_->config().max_batch_size;  // 0: no limit of its own
  size_t start = 0;
  while (start < decoded.size()) {
    // The longest run from `start` that merges into one engine call.
    size_t end = start + 1;
    int64_t rows = merge && InModelOrder(signature, decoded[start].request.inputs)
                       ? RowsOf(decoded[start].request.inputs)
                       : -1;
    while (rows > 0 && end < decoded.size()) {
      auto& next = decoded[end].request;
      if (!InModelOrder(signature, next.inputs) ||
          !CanMerge(decoded[start].request.inputs, next.inputs) ||
          next.requested_outputs != decoded[start].request.requested_outputs ||
          next.parameters != decoded[start].request.parameters || RowsOf(next.inputs) <= 0 ||
          (max_rows > 0 && rows + RowsOf(next.inputs) > max_rows)) {
        break;
      }
      rows += RowsOf(next.inputs);
      ++end;
    }
    if (end - start == 1) {
      run_one(decoded[start]);
      start = end;
      continue;
    }
    std::vector<const std::vector<Tensor>*> parts;
    std::vector<int64_t> part_rows;
    for (size_t i = start; i < end; ++i) {
      parts.push_back(&decoded[i].request.inputs);
      part_rows.push_back(RowsOf(decoded[i].request.inputs));
    }
    InferRequest merged{
        .model_name = identity_.name,
        .model_version = decoded[start].request.model_version,
        .id = {},
        .inputs = MergeBatch(parts),
        .requested_outputs = decoded[start].request.requested_outputs,
        .parameters = decoded[start].request.parameters,
    };
    auto response = inference_.Infer(std::move(merged));
    auto split = response.ok() ? SplitBatch(response->outputs, part_rows)
                               : Result<std::vector<std::vector<Tensor>>>(response.status());
    if (!split.ok()) {
      // One request of the group may be the one the model refuses: each on
      // its own says which.
      for (size_t i = start; i < end; ++i) {
        run_one(decoded[i]);
      }
    } else {
      for (size_t i = start; i < end; ++i) {
        records[decoded[i].index] =
            SuccessRecord(InferResponse{response->model_name, response->model_version,
                                        decoded[i].request.id, std::move((*split)[i - start])});
      }
    }
    start = end;
  }
  return records;
}

std::string BatchRunner::ErrorRecord(const std::string& id, std::string_view message) const {
  return fmt::format(
      R"({{"id":{},"error":{},"model_name":{},"model_version":"{}","parameters":{{{}:{}}}}})",
      JsonQuote(id), JsonQuote(message), JsonQuote(identity_.name), identity_.version,
      JsonQuote(kArtifactDigestParameter), JsonQuote(identity_.digest));
}

std::string BatchRunner::SuccessRecord(InferResponse response) const {
  // The job's digest, whatever the service knew: a local folder served
  // without trust keys has none of its own, and batch records always name
  // their artifact.
  response.artifact_digest = identity_.digest;
  auto encoded = EncodeJsonInferResponse(response, JsonInferRequest{});
  if (!encoded.ok()) {
    return ErrorRecord(response.id, encoded.status().message());
  }
  return std::move(encoded->body);
}

}  // namespace perch
