#include "pipeline/operations.h"

#include <gtest/gtest.h>

namespace perch::pipeline {
namespace {

Tensor Floats(Shape shape, std::vector<float> values) {
  Tensor tensor{.name = "t", .datatype = DataType::kFp32, .shape = std::move(shape), .data = {}};
  for (float value : values) {
    AppendElement<float>(tensor.data, value);
  }
  return tensor;
}

std::vector<float> Values(const Tensor& tensor) {
  std::vector<float> values;
  for (size_t i = 0; i < tensor.data.size() / sizeof(float); ++i) {
    values.push_back(ReadElement<float>(tensor.data, i));
  }
  return values;
}

TEST(OperationsTest, CastsInt16ToFloat) {
  Tensor samples{.name = "a", .datatype = DataType::kInt16, .shape = {2}, .data = {}};
  AppendElement<int16_t>(samples.data, -32768);
  AppendElement<int16_t>(samples.data, 7);
  const auto cast = Cast(samples, DataType::kFp32);
  ASSERT_TRUE(cast.ok()) << cast.status().message();
  EXPECT_EQ(Values(*cast), (std::vector<float>{-32768.0F, 7.0F}));
}

TEST(OperationsTest, ScalesAndRefusesIntegers) {
  const auto scaled = ScaleOffset(Floats({2}, {10, 20}), 0.1, 2);
  ASSERT_TRUE(scaled.ok());
  EXPECT_EQ(Values(*scaled), (std::vector<float>{3, 4}));
  Tensor ints{
      .name = "i", .datatype = DataType::kInt32, .shape = {1}, .data = std::string(4, '\0')};
  EXPECT_EQ(ScaleOffset(ints, 1, 0).status().code(), StatusCode::kInvalidArgument);
}

TEST(OperationsTest, ReshapesWithOneUnknownDim) {
  const auto reshaped = Reshape(Floats({1, 6}, {1, 2, 3, 4, 5, 6}), {-1, 2});
  ASSERT_TRUE(reshaped.ok());
  EXPECT_EQ(reshaped->shape, (Shape{3, 2}));
  EXPECT_EQ(Reshape(Floats({6}, {1, 2, 3, 4, 5, 6}), {4, -1}).status().code(),
            StatusCode::kInvalidArgument);
}

TEST(OperationsTest, SlicesAlongAnAxisFromTheEnd) {
  const auto sliced = Slice(Floats({2, 3}, {1, 2, 3, 4, 5, 6}), 1, -2, 3);
  ASSERT_TRUE(sliced.ok());
  EXPECT_EQ(sliced->shape, (Shape{2, 2}));
  EXPECT_EQ(Values(*sliced), (std::vector<float>{2, 3, 5, 6}));
  EXPECT_EQ(Slice(Floats({2}, {1, 2}), 1, 0, 1).status().code(), StatusCode::kInvalidArgument);
}

TEST(OperationsTest, ConcatenatesAndRefusesMismatchedDims) {
  const Tensor a = Floats({2, 1}, {1, 2});
  const Tensor b = Floats({2, 2}, {3, 4, 5, 6});
  const auto joined = Concat({&a, &b}, 1);
  ASSERT_TRUE(joined.ok());
  EXPECT_EQ(joined->shape, (Shape{2, 3}));
  EXPECT_EQ(Values(*joined), (std::vector<float>{1, 3, 4, 2, 5, 6}));
  EXPECT_EQ(Concat({&a, &b}, 0).status().code(), StatusCode::kInvalidArgument);
}

TEST(OperationsTest, WindowKeepsTheLastRows) {
  auto window = Filled(DataType::kFp32, {3}, 1);
  ASSERT_TRUE(window.ok());
  ASSERT_TRUE(PushWindow(*window, Floats({2}, {7, 8})).ok());
  EXPECT_EQ(Values(*window), (std::vector<float>{1, 7, 8}));
  ASSERT_TRUE(PushWindow(*window, Floats({4}, {1, 2, 3, 4})).ok());
  EXPECT_EQ(Values(*window), (std::vector<float>{2, 3, 4}));
  EXPECT_EQ(PushWindow(*window, Floats({1, 1}, {1})).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace perch::pipeline
