#include "fleet/device_facts.h"

#include <gtest/gtest.h>

#include <fstream>

#include "fleet/fleet_json.h"
#include "fleet/fleet_types.h"

namespace perch {
namespace {

namespace fs = std::filesystem;

class DeviceFactsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ =
        fs::path(::testing::TempDir()) /
        ("facts-" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(root_);
    fs::create_directories(root_ / "proc");
  }
  void TearDown() override { fs::remove_all(root_); }

  void Write(const std::string& relative, const std::string& text) {
    fs::create_directories((root_ / relative).parent_path());
    std::ofstream(root_ / relative) << text;
  }

  fs::path root_;
};

TEST_F(DeviceFactsTest, ReadsAnX86Machine) {
  Write("proc/cpuinfo",
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\nflags\t\t: fpu sse2 avx2 "
        "avx512f\n\nprocessor\t: 1\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\nflags\t\t: fpu "
        "sse2 avx2 avx512f\n");
  Write("proc/meminfo", "MemTotal:        8029860 kB\nMemFree:          123 kB\n");
  const DeviceFacts facts = ReadDeviceFacts(root_, "amd64");
  EXPECT_EQ(facts.architecture, "amd64");
  EXPECT_EQ(facts.cpu_model, "Intel(R) Xeon(R) CPU @ 2.20GHz");
  EXPECT_EQ(facts.cpu_features, (std::vector<std::string>{"avx2", "avx512f", "fpu", "sse2"}));
  EXPECT_EQ(facts.cores, 2);
  EXPECT_EQ(facts.memory_bytes, int64_t{8029860} * 1024);
  EXPECT_TRUE(facts.accelerators.empty());
}

TEST_F(DeviceFactsTest, ReadsAnArmBoardWithAnNvidiaDriver) {
  Write("proc/cpuinfo",
        "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU "
        "implementer\t: 0x41\nCPU part\t: 0xd08\n\nprocessor\t: 1\nFeatures\t: fp asimd evtstrm "
        "crc32 cpuid\nCPU part\t: 0xd08\n");
  Write("proc/meminfo", "MemTotal:        3884368 kB\n");
  Write("proc/driver/nvidia/version",
        "NVRM version: NVIDIA UNIX Open Kernel Module for aarch64  540.4.0  Release Build\n"
        "GCC version:  gcc version 11.4.0\n");
  const DeviceFacts facts = ReadDeviceFacts(root_, "arm64");
  EXPECT_EQ(facts.cpu_model, "Cortex-A72");
  EXPECT_EQ(facts.cpu_features,
            (std::vector<std::string>{"asimd", "cpuid", "crc32", "evtstrm", "fp"}));
  EXPECT_EQ(facts.cores, 2);
  EXPECT_EQ(facts.accelerators, (std::vector<std::string>{"nvidia:540.4.0"}));
}

TEST_F(DeviceFactsTest, ReadsTheNvidiaDriverVersion) {
  Write("proc/driver/nvidia/version",
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC "
        "2023\n");
  EXPECT_EQ(ReadDeviceFacts(root_, "amd64").accelerators,
            (std::vector<std::string>{"nvidia:535.104.05"}));
}

TEST_F(DeviceFactsTest, WhatCannotBeReadStaysEmpty) {
  const DeviceFacts facts = ReadDeviceFacts(root_ / "missing", "arm64");
  EXPECT_EQ(facts.architecture, "arm64");
  EXPECT_TRUE(facts.cpu_model.empty());
  EXPECT_EQ(facts.memory_bytes, 0);
}

DeviceFacts GpuServer() {
  return DeviceFacts{.architecture = "amd64",
                     .cpu_model = "Xeon",
                     .cpu_features = {"avx2", "sse2"},
                     .cores = 16,
                     .memory_bytes = int64_t{64} << 30,
                     .accelerators = {"nvidia:535.104.05"},
                     .perch_version = "0.1.0",
                     .onnxruntime_version = "1.29.0",
                     .execution_providers = {"cuda", "cpu"}};
}

TEST(FactSelectorTest, EveryGivenFactMustHold) {
  const DeviceFacts gpu = GpuServer();
  DeviceFacts pi = gpu;
  pi.accelerators.clear();
  pi.cpu_features = {"asimd", "fp"};
  pi.cores = 4;
  pi.memory_bytes = int64_t{4} << 30;

  EXPECT_TRUE(FactSelector{}.Matches(pi));
  EXPECT_TRUE(FactSelector{.accelerators = {"nvidia"}}.Matches(gpu));
  EXPECT_FALSE(FactSelector{.accelerators = {"nvidia"}}.Matches(pi));
  EXPECT_TRUE(FactSelector{.cpu_features = {"asimd"}}.Matches(pi));
  const FactSelector asimd_and_sve{.cpu_features = {"asimd", "sve"}};
  EXPECT_FALSE(asimd_and_sve.Matches(pi));
  EXPECT_TRUE(FactSelector{.min_cores = 4}.Matches(pi));
  EXPECT_FALSE(FactSelector{.min_cores = 8}.Matches(pi));
  EXPECT_FALSE(FactSelector{.min_memory_bytes = int64_t{8} << 30}.Matches(pi));
  EXPECT_TRUE(FactSelector{.min_memory_bytes = int64_t{8} << 30}.Matches(gpu));
  // "nvidia" is a kind, matched whole: "nvid" is not one.
  EXPECT_FALSE(FactSelector{.accelerators = {"nvid"}}.Matches(gpu));
}

TEST(FactSelectorTest, ADeploymentSelectorUsesTheDevicesFacts) {
  Device device{.name = "rack-1", .location = "tower", .architecture = "amd64"};
  device.facts = GpuServer();
  Selector selector{.architecture = "amd64"};
  selector.facts.accelerators = {"nvidia"};
  EXPECT_TRUE(selector.Matches(device));
  device.facts.accelerators.clear();
  EXPECT_FALSE(selector.Matches(device));
}

TEST(DeviceFactsJsonTest, RoundTrips) {
  const auto facts = ParseDeviceFacts(ToJson(GpuServer()));
  ASSERT_TRUE(facts.ok()) << facts.status().message();
  EXPECT_EQ(*facts, GpuServer());
  const FactSelector selector{.accelerators = {"nvidia"}, .min_cores = 4};
  const auto parsed = ParseFactSelector(ToJson(selector));
  ASSERT_TRUE(parsed.ok()) << parsed.status().message();
  EXPECT_EQ(*parsed, selector);
  EXPECT_EQ(ToJson(FactSelector{}), "{}");
}

TEST(DeviceFactsJsonTest, EnrolmentAndHeartbeatCarryThem) {
  DeviceSpec spec{.name = "rack-1", .architecture = "amd64"};
  spec.facts = GpuServer();
  const auto enrolment = ParseDeviceSpec(ToJson(spec));
  ASSERT_TRUE(enrolment.ok()) << enrolment.status().message();
  EXPECT_EQ(enrolment->facts, GpuServer());

  Heartbeat heartbeat;
  heartbeat.facts = GpuServer();
  const auto beat = ParseHeartbeat(ToJson(heartbeat));
  ASSERT_TRUE(beat.ok()) << beat.status().message();
  ASSERT_TRUE(beat->facts.has_value());
  EXPECT_EQ(*beat->facts, GpuServer());
  // An agent from before device facts sends none.
  const auto old = ParseHeartbeat(R"({"models": []})");
  ASSERT_TRUE(old.ok()) << old.status().message();
  EXPECT_FALSE(old->facts.has_value());
}

TEST(DeviceFactsJsonTest, BadFactsAreRefusedNamingTheField) {
  const auto expect_error = [](const std::string& body, const std::string& fragment) {
    const auto parsed = ParseDeploymentSpec(body);
    ASSERT_FALSE(parsed.ok()) << body;
    EXPECT_EQ(parsed.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(parsed.status().message().find(fragment), std::string::npos)
        << parsed.status().message();
  };
  expect_error(R"({"name": "d", "reference": "h/r:1", "selector": {"facts": 3}})",
               "selector.facts: must be a JSON object");
  expect_error(R"({"name": "d", "reference": "h/r:1", "selector": {"facts": {"min_cores": -1}}})",
               "selector.facts.min_cores: must be an integer, 0 or more");
  expect_error(R"({"name": "d", "reference": "h/r:1", "selector": {"facts": {"gpu": true}}})",
               "selector.facts.gpu: unknown");
  expect_error(
      R"({"name": "d", "reference": "h/r:1", "selector": {"facts": {"accelerators": "nvidia"}}})",
      "selector.facts.accelerators: must be an array of strings");
  const auto enrolment = ParseDeviceSpec(R"({"name": "a", "facts": {"cores": "four"}})");
  ASSERT_FALSE(enrolment.ok());
  EXPECT_NE(enrolment.status().message().find("facts.cores: must be an integer"), std::string::npos)
      << enrolment.status().message();
}

}  // namespace
}  // namespace perch
