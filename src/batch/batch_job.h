// A batch job's files: which inputs a job has, and the output folder that
// holds its results (docs/batch.md "Output layout"):
//
//   DIR/<input name>     JSON Lines, one record per request, in input order
//   DIR/.<name>.partial  a file being written; renamed to <name> when whole
//   DIR/_MODEL           {"model_name", "model_version", "model_digest"}: whose
//                        results the folder holds, written before any record
//   DIR/_SUCCESS         the job's summary, written last (removed while a job runs)
//
// A finished file is never written again, so a re-run redoes only what a
// stopped run left unfinished and no record is written twice.
//
// Threading: an OutputFolder is used by one thread; OutputFile likewise.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "batch/batch_runner.h"
#include "core/status.h"

namespace perch {

// One input of a job and the output file it gives.
struct BatchInput {
  std::filesystem::path path;                 // a JSON Lines file, or a folder of .npy files
  std::vector<std::filesystem::path> arrays;  // the .npy files of a folder, by name; else empty
  std::string output_name;                    // the file's name; "<folder>.jsonl" for .npy
  uint64_t bytes = 0;
};

// The inputs `paths` name: a file is JSON Lines; a folder gives each of its
// *.jsonl files, or, when it holds .npy files, one input of all of them.
// NotFound / PermissionDenied for a path that cannot be read,
// InvalidArgument for a folder holding neither, two inputs with the same
// output name, or a name the output folder keeps for itself ("_", ".").
Result<std::vector<BatchInput>> ListBatchInputs(const std::vector<std::filesystem::path>& paths);

struct FileSummary {
  std::string input;
  std::string output;
  BatchCounts counts;
  bool skipped = false;  // finished by an earlier run
};

// An output file being written under its temporary name.
class OutputFile {
 public:
  OutputFile(std::filesystem::path partial, std::filesystem::path final_path);
  std::ostream& stream() { return stream_; }
  // Flushes, syncs and renames the file to its final name. Internal /
  // ResourceExhausted naming the file.
  Status Commit();

 private:
  const std::filesystem::path partial_;
  const std::filesystem::path final_;
  std::ofstream stream_;
};

class OutputFolder {
 public:
  // Creates `dir` if needed and records `model` in DIR/_MODEL, then removes
  // a stale _SUCCESS. AlreadyExists when the folder holds another model's
  // results (a different digest in _MODEL or _SUCCESS); PermissionDenied /
  // Internal naming the folder when it cannot be written.
  static Result<std::unique_ptr<OutputFolder>> Open(const std::filesystem::path& dir,
                                                    const ModelIdentity& model);

  // The counts of `name` when an earlier run finished it; NotFound if not.
  Result<BatchCounts> Finished(const std::string& name) const;

  // Starts `name` under its temporary name (truncating a half-written one).
  Result<std::unique_ptr<OutputFile>> Begin(const std::string& name) const;

  // Writes DIR/_SUCCESS: the model, every file with its counts, the totals
  // and `seconds`.
  Status WriteSuccess(const std::vector<FileSummary>& files, double seconds) const;

 private:
  OutputFolder(std::filesystem::path dir, ModelIdentity model);

  const std::filesystem::path dir_;
  const ModelIdentity model_;
};

}  // namespace perch
