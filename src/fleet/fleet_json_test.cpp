#include "fleet/fleet_json.h"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

namespace perch {
namespace {

TEST(FleetJsonTest, DeploymentSpecsRoundTrip) {
  const DeploymentSpec spec{
      .name = "detector",
      .reference = "hub:8080/m:1",
      .selector = {.location = "plant-a",
                   .labels = {{"camera", "yes"}},
                   .architecture = "arm64",
                   .device = ""},
      .rollout = {.strategy = RolloutStrategy::kCanary,
                  .canary_percent = 20,
                  .canary_healthy_seconds = 300,
                  .require_signature = true},
      .replicas = 2,
  };
  auto parsed = ParseDeploymentSpec(ToJson(spec));
  ASSERT_TRUE(parsed.ok()) << parsed.status().message();
  EXPECT_EQ(ToJson(*parsed), ToJson(spec));
  EXPECT_TRUE(parsed->rollout.require_signature);

  DesiredState state{.models = {{.deployment = "d",
                                 .revision = 2,
                                 .reference = "hub/m:1",
                                 .require_signature = true}},
                     .etag = "e"};
  auto desired = ParseDesiredState(ToJson(state));
  ASSERT_TRUE(desired.ok()) << desired.status().message();
  EXPECT_TRUE(desired->models[0].require_signature);
  // Unset, it stays out of the document, so that existing etags do not change.
  state.models[0].require_signature = false;
  EXPECT_EQ(ToJson(state).find("require_signature"), std::string::npos);
}

TEST(FleetJsonTest, DevicesAndHeartbeatsRoundTrip) {
  Device device{.name = "pi-1",
                .location = "plant-a",
                .labels = {{"zone", "n"}},
                .architecture = "arm64",
                .perch_version = "0.1.0",
                .addresses = {"10.0.0.2"},
                .enrolled_at = 5,
                .last_seen = 9,
                .revoked = false,
                .heartbeat = Heartbeat{}};
  device.heartbeat->models.push_back(
      {.name = "m",
       .version = 2,
       .reference = "h/m:2",
       .digest = "sha256:x",
       .state = "READY",
       .error = "",
       .signature = {
           .state = "verified", .key = "site.pub.pem", .key_sha256 = std::string(64, 'a')}});
  device.heartbeat->models.push_back(
      {.name = "n", .version = 1, .state = "FAILED", .signature = {.state = "refused"}});
  device.heartbeat->outbox_depth = 3;
  device.heartbeat->memory_available_bytes = int64_t{3} << 30;
  auto parsed = ParseDevice(ToJson(device));
  ASSERT_TRUE(parsed.ok()) << parsed.status().message();
  EXPECT_EQ(ToJson(*parsed), ToJson(device));
  auto listed = ParseDevices(JsonArray({ToJson(device), ToJson(device)}));
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(listed->size(), 2u);
}

TEST(FleetJsonTest, BadDocumentsNameTheField) {
  const struct {
    const char* body;
    const char* message;
  } cases[] = {
      {"{", "not valid JSON"},
      {"[]", "must be a JSON object"},
      {R"({"reference":"h/m:1"})", "name: is required"},
      {R"({"name":"d"})", "reference: is required"},
      {R"({"name":"D!","reference":"h/m:1"})", "name: 'D!' is not a valid name"},
      {R"({"name":"d","reference":"h/m:1","selector":{"labels":{"k":1}}})",
       "selector.labels.k: must be a string"},
      {R"({"name":"d","reference":"h/m:1","selector":[]})", "selector: must be a JSON object"},
      {R"({"name":"d","reference":"h/m:1","rollout":{"strategy":"blue-green"}})",
       "rollout.strategy: must be all-at-once or canary"},
      {R"({"name":"d","reference":"h/m:1","rollout":{"strategy":"canary","canary_percent":0}})",
       "rollout.canary_percent"},
      {R"({"name":"d","reference":"h/m:1","rollout":{"canary_percent":"x"}})",
       "rollout.canary_percent: must be an integer"},
      {R"({"name":"d","reference":"h/m:1","replicas":-1})", "replicas: must be between 0"},
      {R"({"name":"d","reference":"h/m:1","replicas":1001})", "replicas: must be between 0"},
      {R"({"name":"d","reference":"h/m:1","replicas":"two"})", "replicas: must be an integer"},
      {R"({"name":"d","reference":"h/m:1","replicas":1.5})", "replicas: must be an integer"},
  };
  for (const auto& test : cases) {
    const auto parsed = ParseDeploymentSpec(test.body);
    ASSERT_FALSE(parsed.ok()) << test.body;
    EXPECT_EQ(parsed.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(parsed.status().message().find(test.message), std::string::npos)
        << test.body << " -> " << parsed.status().message();
  }
  const auto heartbeat = ParseHeartbeat(R"({"models":[{"name":"m","version":"1"}]})");
  ASSERT_FALSE(heartbeat.ok());
  EXPECT_NE(heartbeat.status().message().find("models[0].version: must be an integer"),
            std::string::npos)
      << heartbeat.status().message();
  for (const auto& [body, message] : std::vector<std::pair<std::string, std::string>>{
           {R"({"models":[{"name":"m","signature":{"state":"<b>trusted</b>"}}]})",
            "models[0].signature.state: must be verified, signed, unsigned or refused"},
           {R"({"models":[{"name":"m","signature":{}}]})",
            "models[0].signature.state: is required"},
           {R"({"models":[{"name":"m","signature":"verified"}]})",
            "models[0].signature: must be a JSON object"},
           {R"({"models":[{"name":"m","signature":{"state":"verified","key":")" +
                std::string(300, 'k') + R"("}}]})",
            "models[0].signature.key: a key file name of at most 256"},
       }) {
    const auto bad = ParseHeartbeat(body);
    ASSERT_FALSE(bad.ok()) << body;
    EXPECT_NE(bad.status().message().find(message), std::string::npos) << bad.status().message();
  }
  const auto memory = ParseHeartbeat(R"({"memory_available_bytes":"lots"})");
  ASSERT_FALSE(memory.ok());
  EXPECT_NE(memory.status().message().find("memory_available_bytes: must be an integer"),
            std::string::npos)
      << memory.status().message();
}

TEST(FleetJsonTest, DeviceSpecsCarryTheEnrolmentKeyOnlyWhenThereIsOne) {
  DeviceSpec spec{.name = "pi-1", .enrolment_key = std::string(64, 'f')};
  auto parsed = ParseDeviceSpec(ToJson(spec));
  ASSERT_TRUE(parsed.ok()) << parsed.status().message();
  EXPECT_EQ(parsed->enrolment_key, spec.enrolment_key);
  // An agent before enrolment keys sends none; so does the spec without one
  // (an older hub would ignore the field, but there is no need to send it).
  spec.enrolment_key.clear();
  EXPECT_EQ(ToJson(spec).find("enrolment_key"), std::string::npos);
  parsed = ParseDeviceSpec(R"({"name":"pi-1"})");
  ASSERT_TRUE(parsed.ok());
  EXPECT_TRUE(parsed->enrolment_key.empty());

  for (const std::string& body : {
           std::string(R"({"name":"pi-1","enrolment_key":""})"),
           R"({"name":"pi-1","enrolment_key":")" + std::string(129, 'a') + R"("})",
           R"({"name":"pi-1","enrolment_key":")" + std::string(31, 'a') + R"("})",
           R"({"name":"pi-1","enrolment_key":"../)" + std::string(40, 'a') + R"("})",
       }) {
    const auto bad = ParseDeviceSpec(body);
    ASSERT_FALSE(bad.ok()) << body;
    EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(bad.status().message().find("enrolment_key: must be 32 to 128"), std::string::npos)
        << bad.status().message();
  }
  for (const char* body :
       {R"({"name":"pi-1","enrolment_key":42})", R"({"name":"pi-1","enrolment_key":["k"]})"}) {
    const auto bad = ParseDeviceSpec(body);
    ASSERT_FALSE(bad.ok()) << body;
    EXPECT_NE(bad.status().message().find("enrolment_key: must be a string"), std::string::npos)
        << bad.status().message();
  }
}

TEST(FleetJsonTest, DeploymentsCarryWhereTheyArePlaced) {
  Deployment deployment{
      .name = "d",
      .revisions = {Revision{.number = 1, .reference = "h/m:1", .replicas = 2}},
      .placements = {Placement{.location = "a", .devices = {"a1", "a2"}, .replicas = 2},
                     Placement{.location = "b", .devices = {"b1"}, .replicas = 2}}};
  auto parsed = ParseDeployment(ToJson(deployment));
  ASSERT_TRUE(parsed.ok()) << parsed.status().message();
  EXPECT_EQ(ToJson(*parsed), ToJson(deployment));
  ASSERT_EQ(parsed->placements.size(), 2u);
  EXPECT_EQ(parsed->placements[0].devices, (std::vector<std::string>{"a1", "a2"}));
  EXPECT_EQ(parsed->revisions[0].replicas, 2);
  // Location b has one device for two replicas: the JSON says so.
  const auto warnings = PlacementWarnings(*parsed);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("location 'b' has 1 device"), std::string::npos) << warnings[0];
  EXPECT_NE(ToJson(deployment).find(R"("warnings":["location 'b')"), std::string::npos);
}

TEST(FleetJsonTest, DeviceMetricsAndCanaryAnalysisRoundTrip) {
  Heartbeat heartbeat;
  heartbeat.metrics = HeartbeatMetrics{
      .interval_seconds = 10,
      .models =
          {{.name = "m", .version = 2, .requests = 40, .failures = 1, .p50_ms = 1.5, .p99_ms = 9}},
      .vitals = {.cpu_percent = 12.5,
                 .memory_used_bytes = 100,
                 .memory_total_bytes = 200,
                 .disk_used_bytes = 5,
                 .disk_total_bytes = 10,
                 .temperature_celsius = 48.5}};
  auto parsed = ParseHeartbeat(ToJson(heartbeat));
  ASSERT_TRUE(parsed.ok()) << parsed.status().message();
  ASSERT_TRUE(parsed->metrics);
  EXPECT_EQ(ToJson(*parsed), ToJson(heartbeat));
  EXPECT_EQ(parsed->metrics->vitals.temperature_celsius, 48.5);
  // Agents before device metrics send none; none is what the hub reads.
  EXPECT_FALSE(ParseHeartbeat(R"({"models": []})")->metrics);

  DeploymentSpec spec{.name = "d", .reference = "hub:8080/m:2"};
  spec.rollout = {.strategy = RolloutStrategy::kCanary,
                  .canary_percent = 20,
                  .canary_healthy_seconds = 0,
                  .require_signature = false,
                  .analysis = CanaryAnalysis{.window_seconds = 30, .max_p99_ratio = 2}};
  auto deployment = ParseDeploymentSpec(ToJson(spec));
  ASSERT_TRUE(deployment.ok()) << deployment.status().message();
  EXPECT_EQ(ToJson(*deployment), ToJson(spec));
  EXPECT_EQ(ParseDeploymentSpec(R"({"name": "d", "reference": "h/m:1",
      "rollout": {"analysis": {}}})")
                .status()
                .message(),
            "rollout.analysis: is for canary rollouts only");

  const CanaryVerdict verdict{.at = 5,
                              .outcome = "fail",
                              .window_start = 1,
                              .window_end = 4,
                              .baseline_version = 1,
                              .baseline_requests = 100,
                              .baseline_failures = 0,
                              .baseline_p99_ms = 5,
                              .canary_version = 2,
                              .canary_requests = 90,
                              .canary_failures = 2,
                              .canary_p99_ms = 80,
                              .reason = "p99"};
  auto read = ParseCanaryVerdict(ToJson(verdict));
  ASSERT_TRUE(read.ok()) << read.status().message();
  EXPECT_EQ(ToJson(*read), ToJson(verdict));
}

}  // namespace
}  // namespace perch
