#include "models/batching.h"

#include <gtest/gtest.h>

#include <cstring>

namespace perch {
namespace {

Tensor Floats(const std::string& name, Shape shape, std::vector<float> values) {
  Tensor tensor{.name = name, .datatype = DataType::kFp32, .shape = std::move(shape), .data = {}};
  tensor.data.assign(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
  return tensor;
}

std::vector<float> ValuesOf(const Tensor& tensor) {
  std::vector<float> values(tensor.data.size() / sizeof(float));
  std::memcpy(values.data(), tensor.data.data(), tensor.data.size());
  return values;
}

TEST(BatchingTest, MergesAlongDimZeroAndSplitsBack) {
  const std::vector<Tensor> a{Floats("x", {1, 2}, {1, 2})};
  const std::vector<Tensor> b{Floats("x", {2, 2}, {3, 4, 5, 6})};
  ASSERT_TRUE(CanMerge(a, b));
  const auto merged = MergeBatch({&a, &b});
  ASSERT_EQ(merged.size(), 1u);
  EXPECT_EQ(merged[0].shape, (Shape{3, 2}));
  EXPECT_EQ(ValuesOf(merged[0]), (std::vector<float>{1, 2, 3, 4, 5, 6}));

  const auto split = SplitBatch({Floats("y", {3, 1}, {10, 20, 30})}, {1, 2});
  ASSERT_TRUE(split.ok());
  EXPECT_EQ((*split)[0][0].shape, (Shape{1, 1}));
  EXPECT_EQ(ValuesOf((*split)[0][0]), (std::vector<float>{10}));
  EXPECT_EQ((*split)[1][0].shape, (Shape{2, 1}));
  EXPECT_EQ(ValuesOf((*split)[1][0]), (std::vector<float>{20, 30}));
}

TEST(BatchingTest, SplitsBytesByElement) {
  Tensor words{.name = "w", .datatype = DataType::kBytes, .shape = {3}, .data = {}};
  for (const char* word : {"a", "bb", ""}) {
    AppendBytesElement(words.data, word);
  }
  const auto split = SplitBatch({words}, {2, 1});
  ASSERT_TRUE(split.ok());
  EXPECT_EQ((*split)[0][0].data, std::string("\x01\0\0\0a\x02\0\0\0bb", 11));
  EXPECT_EQ((*split)[1][0].data, std::string("\0\0\0\0", 4));
}

TEST(BatchingTest, RefusesWhatCannotBeBatched) {
  const std::vector<Tensor> a{Floats("x", {1, 2}, {1, 2})};
  EXPECT_FALSE(CanMerge(a, {Floats("x", {1, 3}, {1, 2, 3})}));
  EXPECT_FALSE(CanMerge(a, {Floats("z", {1, 2}, {1, 2})}));
  EXPECT_FALSE(CanMerge(a, {}));
  const auto split = SplitBatch({Floats("y", {1}, {1})}, {1, 2});
  ASSERT_FALSE(split.ok());
  EXPECT_NE(split.status().message().find("not the batch"), std::string::npos);
}

}  // namespace
}  // namespace perch
