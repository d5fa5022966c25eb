// The agent's switch step, driven directly: no hub, a fetcher that hands out
// model folders the test wrote, and the fake engine behind the manager.
#include "fleet/fleet_agent.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>

#include "core/files.h"
#include "testing/fake_engine.h"
#include "testing/fault_files.h"

namespace perch {
namespace {

namespace fs = std::filesystem;

class FleetAgentTest : public ::testing::Test {
 protected:
  FleetAgentTest()
      : root_(fs::path(::testing::TempDir()) /
              ("perch-fleet-agent-" + std::to_string(getpid()) + "-" +
               ::testing::UnitTest::GetInstance()->current_test_info()->name())) {
    fs::remove_all(root_);
    FakeModel broken;
    broken.load_error = InvalidArgument("not a model the fake can run");
    engine_.SetModel("broken", broken);
  }

  ~FleetAgentTest() override {
    manager_.reset();
    agent_.reset();
    fs::remove_all(root_);
  }

  // Makes `reference` pull as model `name` version `version`, whose file
  // holds `content`.
  void Publish(const std::string& reference, const std::string& name, int64_t version,
               const std::string& content) {
    const fs::path folder = root_ / "pulled" / name;
    fs::create_directories(folder / std::to_string(version));
    ASSERT_TRUE(WriteFileAtomically(folder / std::to_string(version) / "model.onnx", content).ok());
    published_[reference] = PulledModel{
        .name = name, .version = version, .digest = "sha256:" + content, .model_folder = folder};
  }

  std::unique_ptr<FleetAgent> OpenAgent() {
    FleetAgentOptions options;
    options.hub_url = "http://127.0.0.1:9";  // never called: no Start
    options.state = root_ / "state";
    options.warmup_runs = 1;
    options.files = files_;
    ModelFetcher fetch = [this](const std::string& reference,
                                const std::string&) -> Result<PulledModel> {
      const auto found = published_.find(reference);
      if (found == published_.end()) {
        return NotFound("the registry has no " + reference);
      }
      return found->second;
    };
    ModelPruner prune = [this](const std::map<std::string, int64_t>& keep) {
      pruned_.push_back(keep);
      return Status::Ok();
    };
    auto agent = FleetAgent::Open(std::move(options), std::move(fetch), std::move(prune),
                                  Logger::ToStderr(LogLevel::kWarn, "fleet"));
    EXPECT_TRUE(agent.ok()) << agent.status().message();
    return agent.ok() ? std::move(agent).value() : nullptr;
  }

  void Start() {
    agent_ = OpenAgent();
    ASSERT_NE(agent_, nullptr);
    manager_ = std::make_unique<ModelManager>(
        ModelManagerOptions{.repository = agent_->ServingRepository()}, engine_, metrics_,
        Logger::ToStderr(LogLevel::kWarn, "models"));
    ASSERT_TRUE(manager_->Start().ok());
  }

  static DesiredState State(const std::string& etag, const std::vector<std::string>& references) {
    DesiredState state;
    state.etag = etag;
    for (const std::string& reference : references) {
      state.models.push_back(
          DesiredModel{.deployment = "d-" + reference, .revision = 1, .reference = reference});
    }
    return state;
  }

  const fs::path root_;
  FakeEngine engine_;
  MetricsRegistry metrics_;
  std::map<std::string, PulledModel> published_;
  std::vector<std::map<std::string, int64_t>> pruned_;
  std::unique_ptr<FleetAgent> agent_;
  std::unique_ptr<ModelManager> manager_;
  FileIo* files_ = nullptr;  // the agent's file system calls; null: the real ones
};

// A power loss at every flush point of a switch from a1 to b2 (the new
// release's folders, its rename, current.json): the agent restarted on what
// the disk kept serves a whole release, a1 or b2, without repair, and b2
// whenever its heartbeat had reported b2.
TEST_F(FleetAgentTest, APowerLossAtEveryFlushPointOfASwitchLeavesAWholeRelease) {
  Publish("hub.local/m:1", "m", 1, "v1");
  Publish("hub.local/m:2", "m", 2, "v2");
  perch::testing::FaultFileIo probe;
  files_ = &probe;
  Start();
  ASSERT_TRUE(agent_->Apply(*manager_, State("a1", {"hub.local/m:1"})).ok());
  const int64_t before = probe.flushes();
  ASSERT_TRUE(agent_->Apply(*manager_, State("b2", {"hub.local/m:2"})).ok());
  const int64_t points = probe.flushes() - before;
  ASSERT_GE(points, 4) << "the release's folders, releases/, current.json and its folder";
  for (int64_t cut = 1; cut <= points + 1; ++cut) {
    manager_.reset();
    agent_.reset();
    fs::remove_all(root_ / "state");
    perch::testing::FaultFileIo io;
    files_ = &io;
    Start();
    ASSERT_TRUE(agent_->Apply(*manager_, State("a1", {"hub.local/m:1"})).ok());
    io.CutPowerAt(io.flushes() + cut);
    (void)agent_->Apply(*manager_, State("b2", {"hub.local/m:2"}));
    const std::string reported = agent_->MakeHeartbeat(*manager_).applied_etag;
    manager_.reset();
    agent_.reset();
    io.PowerLoss();

    files_ = nullptr;
    Start();
    const auto model = manager_->Acquire("m", "");
    ASSERT_TRUE(model.ok()) << "flush point " << cut << ": " << model.status().message();
    EXPECT_EQ((*model)->version(), reported == "b2" ? 2 : 1)
        << "flush point " << cut << ", reported " << reported;
    EXPECT_EQ(agent_->MakeHeartbeat(*manager_).applied_etag, reported) << "flush point " << cut;
  }
}

TEST_F(FleetAgentTest, AppliesADesiredState) {
  Publish("hub.local/m:1", "m", 1, "v1");
  Start();
  ASSERT_TRUE(agent_->Apply(*manager_, State("a1", {"hub.local/m:1"})).ok());

  EXPECT_EQ(agent_->ServingRepository(), root_ / "state" / "fleet" / "releases" / "a1");
  EXPECT_EQ(manager_->repository(), agent_->ServingRepository());
  const auto model = manager_->Acquire("m", "");
  ASSERT_TRUE(model.ok()) << model.status().message();
  EXPECT_EQ((*model)->version(), 1);
  const Heartbeat heartbeat = agent_->MakeHeartbeat(*manager_);
  EXPECT_EQ(heartbeat.applied_etag, "a1");
  EXPECT_TRUE(heartbeat.errors.empty());
  ASSERT_EQ(heartbeat.models.size(), 1U);
  EXPECT_EQ(heartbeat.models[0].state, "READY");
  EXPECT_EQ(heartbeat.models[0].reference, "hub.local/m:1");
  EXPECT_EQ(pruned_, (std::vector<std::map<std::string, int64_t>>{{{"m", 1}}}));
}

TEST_F(FleetAgentTest, ADeploymentFailingToLoadIsLeftOutAndReportedWhileTheOthersSwitch) {
  Publish("hub.local/m:1", "m", 1, "v1");
  Publish("hub.local/m:2", "m", 2, "v2");
  Publish("hub.local/n:1", "n", 1, "broken");
  Start();
  ASSERT_TRUE(agent_->Apply(*manager_, State("a1", {"hub.local/m:1"})).ok());

  // Handled (reported, not retried): Apply itself succeeds.
  ASSERT_TRUE(agent_->Apply(*manager_, State("b2", {"hub.local/m:2", "hub.local/n:1"})).ok());

  // m's deployment switched; n's failed on its own and is reported.
  const fs::path release = agent_->ServingRepository();
  EXPECT_EQ(manager_->repository(), release);
  const auto m = manager_->Acquire("m", "");
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_EQ((*m)->version(), 2);
  EXPECT_EQ(manager_->Acquire("n", "").status().code(), StatusCode::kNotFound);

  const Heartbeat heartbeat = agent_->MakeHeartbeat(*manager_);
  EXPECT_EQ(heartbeat.applied_etag, "b2");
  ASSERT_EQ(heartbeat.errors.size(), 1U);
  EXPECT_NE(heartbeat.errors[0].find("deployment d-hub.local/n:1"), std::string::npos)
      << heartbeat.errors[0];
  EXPECT_NE(heartbeat.errors[0].find("model 'n' version 1 failed to load"), std::string::npos)
      << heartbeat.errors[0];
  EXPECT_EQ(heartbeat.errors[0].find("d-hub.local/m:2"), std::string::npos) << heartbeat.errors[0];
  const auto failed =
      std::find_if(heartbeat.models.begin(), heartbeat.models.end(),
                   [](const ModelReport& report) { return report.state == "FAILED"; });
  ASSERT_NE(failed, heartbeat.models.end());
  EXPECT_EQ(failed->name, "n");
  EXPECT_EQ(failed->reference, "hub.local/n:1");
  EXPECT_EQ(std::count_if(heartbeat.models.begin(), heartbeat.models.end(),
                          [](const ModelReport& report) { return report.state == "FAILED"; }),
            1);

  // A restart serves what was applied.
  manager_.reset();
  agent_.reset();
  const auto restarted = OpenAgent();
  ASSERT_NE(restarted, nullptr);
  EXPECT_EQ(restarted->ServingRepository(), release);
}

TEST_F(FleetAgentTest, AFailingNewRevisionKeepsServingItsPreviousOne) {
  Publish("hub.local/m:1", "m", 1, "v1");
  Publish("hub.local/m:2", "m", 2, "broken");
  Publish("hub.local/n:1", "n", 1, "n1");
  Start();
  ASSERT_TRUE(agent_->Apply(*manager_, State("a1", {"hub.local/m:1"})).ok());

  DesiredState next = State("b2", {"hub.local/m:2", "hub.local/n:1"});
  next.models[0].deployment = "d-hub.local/m:1";  // a new revision of the same deployment
  ASSERT_TRUE(agent_->Apply(*manager_, next).ok());
  EXPECT_EQ((*manager_->Acquire("m", ""))->version(), 1);
  EXPECT_TRUE(manager_->Acquire("n", "").ok());
  const Heartbeat heartbeat = agent_->MakeHeartbeat(*manager_);
  ASSERT_EQ(heartbeat.errors.size(), 1U);
  EXPECT_NE(heartbeat.errors[0].find("model 'm' version 2"), std::string::npos)
      << heartbeat.errors[0];
}

TEST_F(FleetAgentTest, TwoDeploymentsOfOneModelFailOnlyTheSecond) {
  Publish("hub.local/m:1", "m", 1, "v1");
  Publish("hub.local/m:2", "m", 2, "v2");
  Start();
  ASSERT_TRUE(agent_->Apply(*manager_, State("a1", {"hub.local/m:1", "hub.local/m:2"})).ok());
  EXPECT_EQ((*manager_->Acquire("m", ""))->version(), 1);
  const Heartbeat heartbeat = agent_->MakeHeartbeat(*manager_);
  ASSERT_EQ(heartbeat.errors.size(), 1U);
  EXPECT_NE(heartbeat.errors[0].find("only one may"), std::string::npos) << heartbeat.errors[0];
}

TEST_F(FleetAgentTest, ADeploymentRequiringASignatureRefusesAnUnsignedModel) {
  Publish("hub.local/m:1", "m", 1, "v1");
  Publish("hub.local/m:2", "m", 2, "v2");
  Start();
  ASSERT_TRUE(agent_->Apply(*manager_, State("a1", {"hub.local/m:1"})).ok());
  const fs::path good_release = agent_->ServingRepository();

  DesiredState required = State("b2", {"hub.local/m:2"});
  required.models[0].deployment = "d-hub.local/m:1";
  required.models[0].require_signature = true;
  ASSERT_TRUE(agent_->Apply(*manager_, required).ok());  // handled: reported, not retried
  EXPECT_EQ(manager_->repository(), good_release);
  EXPECT_EQ((*manager_->Acquire("m", ""))->version(), 1);
  const Heartbeat heartbeat = agent_->MakeHeartbeat(*manager_);
  ASSERT_EQ(heartbeat.errors.size(), 1U);
  EXPECT_NE(heartbeat.errors[0].find("requires a signature"), std::string::npos)
      << heartbeat.errors[0];
  const auto failed =
      std::find_if(heartbeat.models.begin(), heartbeat.models.end(),
                   [](const ModelReport& report) { return report.state == "FAILED"; });
  ASSERT_NE(failed, heartbeat.models.end());
  EXPECT_EQ(failed->name, "m");
  EXPECT_NE(failed->error.find("unsigned"), std::string::npos) << failed->error;

  // Signed (the trust keys, if any, are the model manager's to check).
  ASSERT_TRUE(WriteFileAtomically(root_ / "pulled" / "m" / "2" / "model.sig", "{}").ok());
  required.etag = "c3";
  ASSERT_TRUE(agent_->Apply(*manager_, required).ok());
  EXPECT_EQ((*manager_->Acquire("m", ""))->version(), 2);
}

TEST_F(FleetAgentTest, AFailedPullHoldsBackOnlyItsOwnDeployment) {
  Publish("hub.local/m:1", "m", 1, "v1");
  Publish("hub.local/n:1", "n", 1, "n1");
  Start();
  ASSERT_TRUE(agent_->Apply(*manager_, State("a1", {"hub.local/m:1"})).ok());

  const Status applied = agent_->Apply(
      *manager_, State("c3", {"hub.local/m:1", "hub.local/missing:1", "hub.local/n:1"}));
  EXPECT_EQ(applied.code(), StatusCode::kNotFound);
  EXPECT_TRUE(manager_->Acquire("m", "").ok());
  EXPECT_TRUE(manager_->Acquire("n", "").ok()) << "the bad deployment held back another";
  const Heartbeat heartbeat = agent_->MakeHeartbeat(*manager_);
  EXPECT_EQ(heartbeat.applied_etag, "c3");
  ASSERT_EQ(heartbeat.errors.size(), 1U);
  EXPECT_NE(heartbeat.errors[0].find("cannot pull hub.local/missing:1"), std::string::npos)
      << heartbeat.errors[0];
}

}  // namespace
}  // namespace perch
