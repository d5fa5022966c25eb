#include "engine/execution_providers.h"

#include <gtest/gtest.h>

namespace perch {
namespace {

const std::vector<std::string> kCpuBuild = {"CPUExecutionProvider"};
const std::vector<std::string> kGpuBuild = {"TensorrtExecutionProvider", "CUDAExecutionProvider",
                                            "CPUExecutionProvider"};

TEST(ExecutionProvidersTest, NothingAskedRunsOnTheCpu) {
  auto plan = PlanExecutionProviders({}, kCpuBuild);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  EXPECT_EQ(plan->candidates, std::vector<std::string>{"cpu"});
  EXPECT_TRUE(plan->skipped.empty());
}

TEST(ExecutionProvidersTest, CudaOnACpuBuildFallsBackToTheCpuWithTheReason) {
  auto plan = PlanExecutionProviders({"cuda", "cpu"}, kCpuBuild);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  EXPECT_EQ(plan->candidates, std::vector<std::string>{"cpu"});
  ASSERT_EQ(plan->skipped.size(), 1u);
  EXPECT_EQ(plan->skipped[0], "cuda: not in this ONNX Runtime build (it has CPUExecutionProvider)");
}

TEST(ExecutionProvidersTest, AGpuBuildTriesTheGpuFirstThenTheCpu) {
  auto plan = PlanExecutionProviders({"tensorrt", "cuda", "cpu"}, kGpuBuild);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  EXPECT_EQ(plan->candidates, (std::vector<std::string>{"tensorrt", "cuda", "cpu"}));
  EXPECT_TRUE(plan->skipped.empty());
}

TEST(ExecutionProvidersTest, NothingIsTriedAfterTheCpu) {
  auto plan = PlanExecutionProviders({"cpu", "cuda"}, kGpuBuild);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  EXPECT_EQ(plan->candidates, std::vector<std::string>{"cpu"});
}

TEST(ExecutionProvidersTest, ADuplicateIsTriedOnce) {
  auto plan = PlanExecutionProviders({"cuda", "cuda", "cpu"}, kGpuBuild);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  EXPECT_EQ(plan->candidates, (std::vector<std::string>{"cuda", "cpu"}));
}

TEST(ExecutionProvidersTest, OnlyAMissingGpuIsUnavailableNamingWhy) {
  auto plan = PlanExecutionProviders({"cuda"}, kCpuBuild);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(plan.status().message().find("cuda: not in this ONNX Runtime build"),
            std::string::npos);
  EXPECT_NE(plan.status().message().find("add \"cpu\""), std::string::npos);
}

TEST(ExecutionProvidersTest, AnUnknownNameIsInvalid) {
  auto plan = PlanExecutionProviders({"gpu", "cpu"}, kGpuBuild);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(plan.status().message().find("\"gpu\" is unknown"), std::string::npos);
}

TEST(ExecutionProvidersTest, KnownNames) {
  EXPECT_TRUE(IsKnownExecutionProvider("cuda"));
  EXPECT_TRUE(IsKnownExecutionProvider("cpu"));
  EXPECT_FALSE(IsKnownExecutionProvider("CUDA"));
  EXPECT_FALSE(IsKnownExecutionProvider(""));
}

}  // namespace
}  // namespace perch
