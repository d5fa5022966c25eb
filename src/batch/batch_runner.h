// BatchRunner: scores a stream of requests (JSON Lines, or .npy files for a
// single-input model) through the InferenceService, exactly as the online
// APIs do, and writes one JSON line per request in input order.
//
// A request that cannot be decoded or that the model refuses becomes an
// error record ({"id", "error", ...}) and the stream goes on; only a failure
// to read the input or to write the output stops it.
//
// Threading: Run* may be called from one thread at a time; each call runs
// `concurrency` threads of its own that take groups of requests in turn,
// decode and infer them in parallel, and write their records in order.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <iosfwd>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "models/inference_service.h"
#include "models/model_manager.h"

namespace perch {

// The model a job runs, as every record and _SUCCESS name it.
struct ModelIdentity {
  std::string name;
  int64_t version = 0;
  std::string digest;  // of the model's OCI manifest: "sha256:..."
};

struct BatchOptions {
  // Groups of requests in flight at once. One by default: the engine's
  // threads already take every core, and decoding beside them slows it more
  // than the overlap gains (measured: 0.87x the bare loop with two, 1.00x
  // with one, on 2 cores). More pays off when the engine leaves cores idle.
  int concurrency = 1;
  int max_batch = 1;       // requests merged into one engine run (batch-dim models only)
  int64_t first_line = 1;  // number of the stream's first line: the id of a line without one
  size_t max_json_depth = 64;
};

struct BatchCounts {
  int64_t records = 0;
  int64_t errors = 0;
};

// Called from the writing thread after each group with the input bytes
// consumed so far.
using BatchProgress = std::function<void(uint64_t bytes_done)>;

class BatchRunner {
 public:
  // `model` is the version every request runs on (it stays loaded while
  // the runner lives); `identity` is what the records say about it.
  BatchRunner(const InferenceService& inference, std::shared_ptr<LoadedModel> model,
              ModelIdentity identity, BatchOptions options);

  // One request per line of `in` (OIP JSON: inputs, optional id, outputs,
  // parameters); empty lines are skipped but counted. Internal when `in`
  // cannot be read; ResourceExhausted / Internal when `out` cannot be written.
  Result<BatchCounts> RunJsonLines(std::istream& in, std::ostream& out,
                                   const BatchProgress& progress = nullptr) const;

  // One request per .npy file (the model's only input), id = the file name.
  // An array with one dim less than a batch-dim model's input gets a
  // leading dim of 1.
  Result<BatchCounts> RunNpyFiles(const std::vector<std::filesystem::path>& files,
                                  std::ostream& out, const BatchProgress& progress = nullptr) const;

  // True when `line` is an error record (they start with {"id":), for
  // writers that count records without parsing them.
  static bool IsErrorRecord(std::string_view line);

 private:
  struct Item;
  class Pipeline;

  // Decodes and runs `items`, one record per item, in order.
  std::vector<std::string> Process(std::vector<Item>& items) const;
  std::string ErrorRecord(const std::string& id, std::string_view message) const;
  std::string SuccessRecord(InferResponse response) const;

  const InferenceService& inference_;
  const std::shared_ptr<LoadedModel> model_;
  const ModelIdentity identity_;
  const BatchOptions options_;
  const bool batchable_;  // dim 0 of every input and output is a batch dim
};

}  // namespace perch
