#include "models/model_manager.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>

#include "core/files.h"
#include "models/memory_budget.h"
#include "models/scheduler.h"
#include "testing/background_calls.h"
#include "testing/fake_engine.h"

namespace perch {
namespace {

namespace fs = std::filesystem;

FakeModel Adds(float add) {
  FakeModel model;
  model.add = add;
  return model;
}

FakeModel FailsToLoad() {
  FakeModel model;
  model.load_error = InvalidArgument("not a model the fake can run");
  return model;
}

Tensor Input(float value) {
  Tensor tensor{.name = "x", .datatype = DataType::kFp32, .shape = {1, 2}, .data = {}};
  for (int i = 0; i < 2; ++i) {
    tensor.data.append(reinterpret_cast<const char*>(&value), sizeof(float));
  }
  return tensor;
}

float FirstValue(const BackgroundCalls::Answer& answer) {
  float value = 0;
  std::memcpy(&value, answer->front().data.data(), sizeof(float));
  return value;
}

class ModelManagerTest : public ::testing::Test {
 protected:
  ModelManagerTest()
      : root_(fs::path(::testing::TempDir()) /
              ("perch-model-manager-" + std::to_string(getpid()) + "-" +
               ::testing::UnitTest::GetInstance()->current_test_info()->name())) {
    fs::remove_all(root_);
    // A model file's content says what the fake engine makes of it.
    engine_.SetModel("v1", Adds(1));
    engine_.SetModel("v2", Adds(2));
    engine_.SetModel("broken", FailsToLoad());
    scheduler_.Start();
  }

  ~ModelManagerTest() override {
    engine_.runs().Release();
    calls_.JoinAll();
    scheduler_.Stop();
    manager_.reset();
    fs::remove_all(root_);
  }

  // Writes REPO/<model>/<version>/model.onnx holding `content`.
  void WriteModel(const fs::path& repository, const std::string& model, int version,
                  const std::string& content) {
    const fs::path folder = repository / model / std::to_string(version);
    fs::create_directories(folder);
    ASSERT_TRUE(WriteFileAtomically(folder / "model.onnx", content).ok());
  }

  void StartManager(const fs::path& repository, VersionCheck check = {}) {
    manager_ = std::make_unique<ModelManager>(
        ModelManagerOptions{.repository = repository, .check_version = std::move(check)}, engine_,
        metrics_, Logger::ToStderr(LogLevel::kWarn, "models"));
    ASSERT_TRUE(manager_->Start().ok());
  }

  std::shared_ptr<LoadedModel> Acquire(const std::string& name) {
    auto model = manager_->Acquire(name, "");
    EXPECT_TRUE(model.ok()) << model.status().message();
    return model.ok() ? *model : nullptr;
  }

  int SubmitInBackground(std::shared_ptr<LoadedModel> model, float value) {
    return calls_.Start([this, model = std::move(model), value] {
      return scheduler_.Submit(model, {Input(value)}, {"y"}, std::nullopt);
    });
  }

  const fs::path root_;
  FakeEngine engine_;
  MetricsRegistry metrics_;
  Scheduler scheduler_{SchedulerOptions{.workers = 2}};
  std::unique_ptr<ModelManager> manager_;
  BackgroundCalls calls_;
};

TEST_F(ModelManagerTest, SwapUnderLoadFinishesInFlightRequestsOnTheOldVersion) {
  WriteModel(root_, "m", 1, "v1");
  StartManager(root_);
  engine_.runs().Hold();
  std::weak_ptr<LoadedModel> old_version;
  {
    // One request runs (held), two wait in the model's queue behind it.
    const auto v1 = Acquire("m");
    ASSERT_NE(v1, nullptr);
    old_version = v1;
    for (int i = 0; i < 3; ++i) {
      SubmitInBackground(v1, 0);
    }
  }
  ASSERT_TRUE(engine_.runs().AwaitHeld(1));

  WriteModel(root_, "m", 2, "v2");
  ASSERT_TRUE(manager_->LoadModel("m").ok());
  const auto v2 = Acquire("m");
  ASSERT_NE(v2, nullptr);
  EXPECT_EQ(v2->version(), 2);
  EXPECT_EQ(manager_->ReadyVersions("m"), (std::vector<int64_t>{2}));
  EXPECT_FALSE(old_version.expired()) << "version 1 was freed under its requests";
  const int on_new = SubmitInBackground(v2, 0);

  engine_.runs().Release();
  ASSERT_TRUE(calls_.AwaitAnswers(4));
  for (int call = 0; call < 3; ++call) {
    const auto answer = calls_.answer(call);
    ASSERT_TRUE(answer.ok()) << answer.status().message();
    EXPECT_EQ(FirstValue(answer), 1) << "request " << call << " did not run on version 1";
  }
  EXPECT_EQ(FirstValue(calls_.answer(on_new)), 2);
  calls_.JoinAll();
  scheduler_.Stop();  // its queues let go of the models
  EXPECT_TRUE(old_version.expired()) << "version 1 outlived its last request";
  EXPECT_EQ(engine_.runs().live_sessions(), 1);
}

TEST_F(ModelManagerTest, FailedLoadOfAChangedCopyKeepsTheOldOneServing) {
  WriteModel(root_, "m", 1, "v1");
  StartManager(root_);
  WriteModel(root_, "m", 1, "broken");

  const Status loaded = manager_->LoadModel("m");
  EXPECT_EQ(loaded.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(loaded.message().find("not a model the fake can run"), std::string::npos)
      << loaded.message();
  const auto served = Acquire("m");
  ASSERT_NE(served, nullptr);
  EXPECT_EQ(served->version(), 1);
  const auto answer = scheduler_.Submit(served, {Input(0)}, {"y"}, std::nullopt);
  ASSERT_TRUE(answer.ok()) << answer.status().message();
  EXPECT_EQ(FirstValue(answer), 1);
  const auto index = manager_->Index();
  ASSERT_EQ(index.size(), 1U);
  EXPECT_EQ(index[0].state, ModelState::kReady);
  EXPECT_NE(index[0].reason.find("a newer copy failed to load"), std::string::npos)
      << index[0].reason;
}

// The trust policy's hook: a version the check refuses never serves, and
// the version it would replace keeps serving although the policy selects
// only the newest.
TEST_F(ModelManagerTest, RefusedVersionNeverServesAndTheOldOneStays) {
  WriteModel(root_, "m", 1, "v1");
  StartManager(root_,
               [](const std::string& model, const fs::path& folder,
                  const std::string& digest) -> Result<std::string> {
                 EXPECT_EQ(model, "m");
                 EXPECT_TRUE(digest.empty());
                 if (fs::exists(folder / "model.sig")) {
                   return "sha256:" + folder.filename().string();
                 }
                 return Status(StatusCode::kPermissionDenied, "unsigned");
               });
  EXPECT_EQ(manager_->Acquire("m", "").status().code(), StatusCode::kUnavailable);
  ASSERT_TRUE(WriteFileAtomically(root_ / "m" / "1" / "model.sig", "{}").ok());
  ASSERT_TRUE(manager_->LoadModel("m").ok());
  const auto v1 = Acquire("m");
  ASSERT_NE(v1, nullptr);
  EXPECT_EQ(v1->artifact_digest(), "sha256:1");

  WriteModel(root_, "m", 2, "v2");
  EXPECT_EQ(manager_->LoadModel("m").code(), StatusCode::kPermissionDenied);
  const auto served = Acquire("m");
  ASSERT_NE(served, nullptr);
  EXPECT_EQ(served->version(), 1);
  const auto refused = manager_->Acquire("m", "2");
  EXPECT_EQ(refused.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(refused.status().message().find("unsigned"), std::string::npos);
  for (const VersionStatus& status : manager_->Index()) {
    if (status.version == 1) {
      EXPECT_EQ(status.state, ModelState::kReady);
      EXPECT_EQ(status.artifact_digest, "sha256:1");
    } else {
      EXPECT_EQ(status.state, ModelState::kUnavailable);
      EXPECT_EQ(status.reason, "unsigned");
    }
  }

  ASSERT_TRUE(WriteFileAtomically(root_ / "m" / "2" / "model.sig", "{}").ok());
  ASSERT_TRUE(manager_->LoadModel("m").ok());
  EXPECT_EQ(Acquire("m")->version(), 2);
  EXPECT_EQ(manager_->ReadyVersions("m"), (std::vector<int64_t>{2}));
}

TEST_F(ModelManagerTest, FailedWarmupIsAFailedLoad) {
  WriteModel(root_, "m", 1, "v1");
  ASSERT_TRUE(WriteFileAtomically(root_ / "m" / "model.json",
                                  R"({"warmup": {"runs": 1, "shapes": {"x": [3, 2]}}})")
                  .ok());
  engine_.runs().SetError(Internal("the fake broke"));
  StartManager(root_);
  const auto model = manager_->Acquire("m", "");
  EXPECT_EQ(model.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(model.status().message().find("warmup failed: the fake broke"), std::string::npos)
      << model.status().message();
}

// The fake's input is [-1, 2]: with no shapes given, warm-up runs [1, 2]
// and its failure says how to give the shapes.
TEST_F(ModelManagerTest, WarmupOnGuessedDimsThatFailsSaysHowToGiveShapes) {
  WriteModel(root_, "m", 1, "v1");
  ASSERT_TRUE(WriteFileAtomically(root_ / "m" / "model.json", R"({"warmup": {"runs": 2}})").ok());
  engine_.runs().SetError(Internal("the fake broke"));
  StartManager(root_);
  const auto model = manager_->Acquire("m", "");
  EXPECT_EQ(model.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(model.status().message().find("dynamic dims as 1"), std::string::npos)
      << model.status().message();
  EXPECT_NE(model.status().message().find("\"shapes\""), std::string::npos);
}

TEST_F(ModelManagerTest, WarmupShapesThatDoNotFitTheModelFailTheLoad) {
  WriteModel(root_, "m", 1, "v1");
  for (const auto& [shapes, expected] : std::vector<std::pair<std::string, std::string>>{
           {R"({"x": [1, 3]})", "gives 'x' the shape [1,3], which does not fit the model's [-1,2]"},
           {R"({"x": [2]})", "does not fit"},
           {R"({"audio": [1, 2]})", "names 'audio', which is not an input of the model"}}) {
    ASSERT_TRUE(
        WriteFileAtomically(root_ / "m" / "model.json",
                            fmt::format(R"({{"warmup": {{"runs": 1, "shapes": {}}}}})", shapes))
            .ok());
    StartManager(root_);
    const auto model = manager_->Acquire("m", "");
    EXPECT_EQ(model.status().code(), StatusCode::kUnavailable) << shapes;
    EXPECT_NE(model.status().message().find(expected), std::string::npos)
        << model.status().message();
  }
}

TEST_F(ModelManagerTest, SwitchRepositoryIsAllOrNothing) {
  const fs::path first = root_ / "first";
  WriteModel(first, "m", 1, "v1");
  StartManager(first);

  const fs::path half_good = root_ / "half-good";
  WriteModel(half_good, "m", 1, "v2");
  WriteModel(half_good, "n", 1, "broken");
  const Status refused = manager_->SwitchRepository(half_good, 0);
  EXPECT_EQ(refused.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(refused.message().find("model 'n' version 1 failed to load"), std::string::npos)
      << refused.message();
  EXPECT_EQ(manager_->repository(), first);
  const auto still = Acquire("m");
  ASSERT_NE(still, nullptr);
  EXPECT_EQ(FirstValue(scheduler_.Submit(still, {Input(0)}, {"y"}, std::nullopt)), 1);
  EXPECT_EQ(manager_->Acquire("n", "").status().code(), StatusCode::kNotFound);

  const fs::path good = root_ / "good";
  WriteModel(good, "m", 1, "v2");
  WriteModel(good, "n", 1, "v1");
  ASSERT_TRUE(manager_->SwitchRepository(good, 0).ok());
  EXPECT_EQ(manager_->repository(), good);
  EXPECT_EQ(FirstValue(scheduler_.Submit(Acquire("m"), {Input(0)}, {"y"}, std::nullopt)), 2);
  EXPECT_NE(Acquire("n"), nullptr);
}

TEST_F(ModelManagerTest, SwitchRepositoryChecksAPipelineAgainstTheNewSteps) {
  // The first repository serves step model m in version 1 only; the next
  // one brings version 2 and a pipeline naming it (a fleet release of a
  // pipeline pinning its steps): the pipeline's load must see version 2.
  const fs::path first = root_ / "first";
  WriteModel(first, "m", 1, "v1");
  const fs::path session_file = root_ / "pipeline-session.onnx";
  fs::create_directories(root_);
  ASSERT_TRUE(WriteFileAtomically(session_file, "v1").ok());
  manager_ = std::make_unique<ModelManager>(
      ModelManagerOptions{.repository = first,
                          .load_pipeline = [&](const ModelManager& models, const ModelOnDisk&,
                                               int64_t) -> Result<std::unique_ptr<Session>> {
                            PERCH_RETURN_IF_ERROR(models.Acquire("m", "2").status());
                            return engine_.Load(session_file, root_, {});
                          }},
      engine_, metrics_, Logger::ToStderr(LogLevel::kWarn, "models"));
  ASSERT_TRUE(manager_->Start().ok());

  const fs::path next = root_ / "next";
  WriteModel(next, "m", 2, "v2");
  fs::create_directories(next / "pipe");
  ASSERT_TRUE(WriteFileAtomically(next / "pipe" / "model.json", R"({"kind":"pipeline"})").ok());
  const Status switched = manager_->SwitchRepository(next, 0);
  ASSERT_TRUE(switched.ok()) << switched.message();
  EXPECT_NE(Acquire("pipe"), nullptr);
  // Outside a switch, lookups see only what serves.
  EXPECT_EQ(manager_->Acquire("m", "1").status().code(), StatusCode::kNotFound);
}

TEST_F(ModelManagerTest, UnloadWaitsForInFlightHandles) {
  WriteModel(root_, "m", 1, "v1");
  StartManager(root_);
  engine_.runs().Hold();
  std::weak_ptr<LoadedModel> unloaded;
  {
    const auto model = Acquire("m");
    ASSERT_NE(model, nullptr);
    unloaded = model;
    SubmitInBackground(model, 5);
  }
  ASSERT_TRUE(engine_.runs().AwaitHeld(1));

  ASSERT_TRUE(manager_->UnloadModel("m").ok());
  EXPECT_EQ(manager_->Acquire("m", "").status().code(), StatusCode::kUnavailable);
  EXPECT_TRUE(manager_->ServedModels().empty());
  EXPECT_EQ(engine_.runs().live_sessions(), 1) << "the session was freed under its request";

  engine_.runs().Release();
  ASSERT_TRUE(calls_.AwaitAnswers(1));
  const auto answer = calls_.answer(0);
  ASSERT_TRUE(answer.ok()) << answer.status().message();
  EXPECT_EQ(FirstValue(answer), 6);
  calls_.JoinAll();
  scheduler_.Stop();
  EXPECT_TRUE(unloaded.expired());
  EXPECT_EQ(engine_.runs().live_sessions(), 0);
}

// With a memory budget. Each fake model file here is 1 MiB: loading one
// needs room for 3 x 1 + 1 = 4 MiB, and once loaded it is charged 1.33 MiB
// (the floor; the fake holds no weights). A budget of 6 MiB thus holds two
// versions (a third finds 2.67 + 4 > 6), one of 5 MiB holds one; the
// margins absorb what else the process allocates meanwhile.
// Budgets measured against this process's resident memory: under a
// sanitizer its shadow memory grows it by more than the fake models' few
// MiB, so these tests run in the plain build only.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kResidentMemoryIsTheModels = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr bool kResidentMemoryIsTheModels = false;
#else
constexpr bool kResidentMemoryIsTheModels = true;
#endif
#else
constexpr bool kResidentMemoryIsTheModels = true;
#endif

class MemoryBudgetTest : public ModelManagerTest {
 protected:
  void SetUp() override {
    if (!kResidentMemoryIsTheModels) {
      GTEST_SKIP() << "a sanitizer's own memory counts in the resident size";
    }
    ModelManagerTest::SetUp();
  }

  void StartBudgeted(const fs::path& repository, int mib) {
    const auto limit = ResidentBytes() + int64_t{mib} * (1 << 20);
    manager_ = std::make_unique<ModelManager>(
        ModelManagerOptions{.repository = repository, .memory_limit_bytes = limit}, engine_,
        metrics_, Logger::ToStderr(LogLevel::kWarn, "models"));
    ASSERT_TRUE(manager_->Start().ok());
  }

  Result<std::shared_ptr<LoadedModel>> AcquireWithin(const std::string& name,
                                                     std::chrono::milliseconds wait) {
    return manager_->Acquire(name, "", std::chrono::steady_clock::now() + wait);
  }

  static float RunOn(LoadedModel& model) {
    const auto outputs = model.session().Run({Input(0)}, {"y"});
    EXPECT_TRUE(outputs.ok()) << outputs.status().message();
    float value = -1;
    if (outputs.ok()) {
      std::memcpy(&value, outputs->front().data.data(), sizeof(float));
    }
    return value;
  }

  // A model file of 1 MiB that starts with `name`.
  static std::string Content(const std::string& name) {
    std::string content = name;
    content.resize(1 << 20, '.');
    return content;
  }

  void WriteAdders(int count) {
    for (int i = 0; i < count; ++i) {
      engine_.SetModel(Content("add" + std::to_string(i)), Adds(static_cast<float>(i)));
      WriteModel(root_, "m" + std::to_string(i), 1, Content("add" + std::to_string(i)));
    }
  }
};

TEST_F(MemoryBudgetTest, ModelsBeyondTheBudgetLoadOnDemandAndTheIdleOnesMakeRoom) {
  WriteAdders(6);
  StartBudgeted(root_, 6);
  const auto at_start = manager_->MemoryBudget();
  EXPECT_GE(at_start.resident_versions, 1);
  EXPECT_LE(at_start.resident_versions, 2)
      << at_start.models_bytes << " for models, " << at_start.charged_bytes << " charged";
  EXPECT_EQ(at_start.resident_versions + at_start.deferred_versions, 6);
  int deferred_rows = 0;
  for (const auto& row : manager_->Index()) {
    deferred_rows += row.reason.find("--memory-limit") != std::string::npos ? 1 : 0;
  }
  EXPECT_EQ(deferred_rows, at_start.deferred_versions);

  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 6; ++i) {
      const auto model = AcquireWithin("m" + std::to_string(i), std::chrono::seconds(10));
      ASSERT_TRUE(model.ok()) << model.status().message();
      EXPECT_EQ(RunOn(**model), static_cast<float>(i)) << "m" << i;
      const auto budget = manager_->MemoryBudget();
      EXPECT_LE(budget.charged_bytes, budget.models_bytes);
      EXPECT_LE(budget.resident_versions, 2);
    }
  }
  EXPECT_LE(engine_.runs().live_sessions(), 2) << "unloaded versions were not freed";
}

TEST_F(MemoryBudgetTest, VersionsInUseAreNotUnloadedAndANewOneWaitsForRoom) {
  WriteAdders(3);
  StartBudgeted(root_, 6);
  auto first = AcquireWithin("m0", std::chrono::seconds(10));
  auto second = AcquireWithin("m1", std::chrono::seconds(10));
  ASSERT_TRUE(first.ok() && second.ok());

  const auto refused = AcquireWithin("m2", std::chrono::seconds(10));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(refused.status().message().find("retry"), std::string::npos)
      << refused.status().message();
  EXPECT_EQ(RunOn(**first), 0);

  first = Status(StatusCode::kCancelled, "let go of m0");
  const auto loaded = AcquireWithin("m2", std::chrono::seconds(10));
  ASSERT_TRUE(loaded.ok()) << loaded.status().message();
  EXPECT_EQ(RunOn(**loaded), 2);
  EXPECT_EQ(RunOn(**second), 1);
}

TEST_F(MemoryBudgetTest, AModelLargerThanTheWholeBudgetIsRefusedWithTheFlagToRaise) {
  const std::string big(8 << 20, 'x');  // needs 25 MiB
  engine_.SetModel(big, Adds(7));
  WriteModel(root_, "big", 1, big);
  WriteAdders(1);
  StartBudgeted(root_, 6);
  const auto refused = AcquireWithin("big", std::chrono::seconds(10));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(refused.status().message().find("raise --memory-limit"), std::string::npos)
      << refused.status().message();
  const auto small = AcquireWithin("m0", std::chrono::seconds(10));
  ASSERT_TRUE(small.ok()) << small.status().message();
  EXPECT_EQ(RunOn(**small), 0);
}

TEST_F(MemoryBudgetTest, ARequestWaitsForItsLoadUntilItsDeadlineOnly) {
  WriteAdders(1);
  engine_.SetModel(Content("slow"), Adds(5));
  WriteModel(root_, "n_slow", 1, Content("slow"));  // scanned after m0, which fills the budget
  ASSERT_TRUE(
      WriteFileAtomically(root_ / "n_slow" / "model.json", R"({"warmup": {"runs": 1}})").ok());
  StartBudgeted(root_, 5);
  ASSERT_EQ(manager_->MemoryBudget().deferred_versions, 1);

  engine_.runs().Hold();  // the load's warmup run holds
  const auto late = AcquireWithin("n_slow", std::chrono::milliseconds(200));
  ASSERT_FALSE(late.ok());
  EXPECT_EQ(late.status().code(), StatusCode::kDeadlineExceeded) << late.status().message();
  ASSERT_TRUE(engine_.runs().AwaitHeld(1));
  engine_.runs().Release();
  const auto loaded = AcquireWithin("n_slow", std::chrono::seconds(10));
  ASSERT_TRUE(loaded.ok()) << loaded.status().message();
  EXPECT_EQ(RunOn(**loaded), 5);
}

}  // namespace
}  // namespace perch
