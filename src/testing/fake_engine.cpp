#include "testing/fake_engine.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <thread>

#include "core/files.h"

namespace perch {
namespace {

namespace fs = std::filesystem;

bool IsInside(const fs::path& file, const fs::path& root) {
  const fs::path relative = file.lexically_relative(root);
  return !relative.empty() && *relative.begin() != "..";
}

}  // namespace

ModelSignature FakeSignature() {
  return ModelSignature{
      .inputs = {{.name = "x", .datatype = DataType::kFp32, .shape = {-1, 2}}},
      .outputs = {{.name = "y", .datatype = DataType::kFp32, .shape = {-1, 2}}},
  };
}

void FakeRuns::SetLatency(std::chrono::microseconds latency) {
  std::lock_guard lock(mutex_);
  latency_ = latency;
}

void FakeRuns::SetError(Status error) {
  std::lock_guard lock(mutex_);
  error_ = std::move(error);
}

void FakeRuns::Hold() {
  std::lock_guard lock(mutex_);
  holding_ = true;
}

void FakeRuns::Release() {
  {
    std::lock_guard lock(mutex_);
    holding_ = false;
  }
  changed_.notify_all();
}

bool FakeRuns::AwaitHeld(int count, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [&] { return held_ >= count; });
}

int64_t FakeRuns::started() const {
  std::lock_guard lock(mutex_);
  return static_cast<int64_t>(batch_rows_.size());
}

int FakeRuns::max_concurrent() const {
  std::lock_guard lock(mutex_);
  return max_running_;
}

std::vector<int64_t> FakeRuns::batch_rows() const {
  std::lock_guard lock(mutex_);
  return batch_rows_;
}

int FakeRuns::live_sessions() const {
  std::lock_guard lock(mutex_);
  return live_sessions_;
}

Status FakeRuns::BeginRun(int64_t rows) {
  std::unique_lock lock(mutex_);
  batch_rows_.push_back(rows);
  // A held run counts as running: it is inside Session::Run.
  ++running_;
  max_running_ = std::max(max_running_, running_);
  if (holding_) {
    ++held_;
    changed_.notify_all();  // AwaitHeld
    changed_.wait(lock, [this] { return !holding_; });
    --held_;
  }
  if (!error_.ok()) {
    --running_;
    return error_;
  }
  const auto latency = latency_;
  lock.unlock();
  if (latency.count() > 0) {
    std::this_thread::sleep_for(latency);
  }
  return Status::Ok();
}

void FakeRuns::EndRun() {
  std::lock_guard lock(mutex_);
  --running_;
}

void FakeRuns::SessionOpened() {
  std::lock_guard lock(mutex_);
  ++live_sessions_;
}

void FakeRuns::SessionClosed() {
  std::lock_guard lock(mutex_);
  --live_sessions_;
}

FakeSession::FakeSession(FakeModel model, std::shared_ptr<FakeRuns> runs)
    : model_(std::move(model)), runs_(std::move(runs)) {
  runs_->SessionOpened();
}

FakeSession::~FakeSession() { runs_->SessionClosed(); }

Result<std::vector<Tensor>> FakeSession::Run(const std::vector<Tensor>& inputs,
                                             const std::vector<std::string>& output_names) {
  if (inputs.empty() || inputs.front().datatype != DataType::kFp32) {
    return InvalidArgument("the fake model takes an FP32 tensor as its first input");
  }
  const Tensor& input = inputs.front();
  PERCH_RETURN_IF_ERROR(runs_->BeginRun(input.shape.empty() ? 1 : input.shape.front()));
  Tensor sum = input;
  for (size_t offset = 0; offset + sizeof(float) <= sum.data.size(); offset += sizeof(float)) {
    float value = 0;
    std::memcpy(&value, sum.data.data() + offset, sizeof(float));
    value += model_.add;
    std::memcpy(sum.data.data() + offset, &value, sizeof(float));
  }
  std::vector<Tensor> outputs;
  for (const std::string& name : output_names) {
    outputs.push_back(sum);
    outputs.back().name = name;
  }
  runs_->EndRun();
  return outputs;
}

FakeEngine::FakeEngine() : runs_(std::make_shared<FakeRuns>()) {}

void FakeEngine::SetModel(const std::string& content, FakeModel model) {
  std::lock_guard lock(mutex_);
  models_[content] = std::move(model);
}

int64_t FakeEngine::loads() const {
  std::lock_guard lock(mutex_);
  return loads_;
}

Result<std::unique_ptr<Session>> FakeEngine::Load(const fs::path& model_file,
                                                  const fs::path& allowed_root,
                                                  const SessionOptions& /*options*/) {
  std::error_code error;
  const fs::path file = fs::canonical(model_file, error);
  if (error) {
    return NotFound(fmt::format("model file {} does not exist", model_file.string()));
  }
  const fs::path root = fs::canonical(allowed_root, error);
  if (error || !IsInside(file, root)) {
    return Status(StatusCode::kPermissionDenied,
                  fmt::format("{} is outside {}", model_file.string(), allowed_root.string()));
  }
  PERCH_ASSIGN_OR_RETURN(const std::string content, ReadFile(file));
  FakeModel model;
  {
    std::lock_guard lock(mutex_);
    if (const auto known = models_.find(content); known != models_.end()) {
      model = known->second;
    }
  }
  PERCH_RETURN_IF_ERROR(model.load_error);
  {
    std::lock_guard lock(mutex_);
    ++loads_;
  }
  return std::unique_ptr<Session>(std::make_unique<FakeSession>(std::move(model), runs_));
}

}  // namespace perch
