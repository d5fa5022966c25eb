#include "models/inference_service.h"

#include <gtest/gtest.h>

namespace perch {
namespace {

const ModelSignature kSignature{
    .inputs = {{.name = "audio", .datatype = DataType::kFp32, .shape = {-1, 4}},
               {.name = "rate", .datatype = DataType::kInt64, .shape = {}}},
    .outputs = {{.name = "score", .datatype = DataType::kFp32, .shape = {-1}},
                {.name = "state", .datatype = DataType::kFp32, .shape = {-1}}},
};

Tensor Make(const std::string& name, DataType datatype, Shape shape) {
  Tensor tensor{.name = name, .datatype = datatype, .shape = std::move(shape), .data = {}};
  tensor.data.assign(
      static_cast<size_t>(ElementCount(tensor.shape).value()) * ElementSize(datatype), '\0');
  return tensor;
}

void ExpectInvalid(const Status& status, const std::string& fragment) {
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find(fragment), std::string::npos) << status.message();
}

TEST(ValidateInputsTest, AcceptsMatchingInputsInAnyOrder) {
  const std::vector<Tensor> inputs{Make("rate", DataType::kInt64, {}),
                                   Make("audio", DataType::kFp32, {3, 4})};
  EXPECT_TRUE(ValidateInputs(kSignature, 0, inputs).ok());
}

TEST(ValidateInputsTest, RefusesMismatches) {
  const Tensor rate = Make("rate", DataType::kInt64, {});
  ExpectInvalid(ValidateInputs(kSignature, 0, {rate}), "input 'audio' (FP32 [-1,4]) is missing");
  ExpectInvalid(ValidateInputs(kSignature, 0, {rate, rate}), "'rate' is given more than once");
  ExpectInvalid(ValidateInputs(kSignature, 0, {rate, Make("audio", DataType::kFp64, {1, 4})}),
                "is FP64 but the model expects FP32");
  ExpectInvalid(ValidateInputs(kSignature, 0, {rate, Make("audio", DataType::kFp32, {4})}), "rank");
  ExpectInvalid(ValidateInputs(kSignature, 0, {rate, Make("audio", DataType::kFp32, {1, 5})}),
                "expects [-1,4]");
  ExpectInvalid(ValidateInputs(kSignature, 2, {rate, Make("audio", DataType::kFp32, {3, 4})}),
                "max_batch_size of 2");
  ExpectInvalid(ValidateInputs(kSignature, 0, {rate, Make("noise", DataType::kFp32, {1})}),
                "no input 'noise'; its inputs are: audio, rate");
  Tensor short_data = Make("audio", DataType::kFp32, {2, 4});
  short_data.data.resize(4);
  ExpectInvalid(ValidateInputs(kSignature, 0, {rate, short_data}), "4 bytes of data");
}

TEST(ResolveOutputsTest, DefaultsToAllAndChecksNames) {
  EXPECT_EQ(ResolveOutputs(kSignature, {}).value(), (std::vector<std::string>{"score", "state"}));
  EXPECT_EQ(ResolveOutputs(kSignature, {"state"}).value(), (std::vector<std::string>{"state"}));
  ExpectInvalid(ResolveOutputs(kSignature, {"nope"}).status(), "no output 'nope'");
  ExpectInvalid(ResolveOutputs(kSignature, {"state", "state"}).status(), "more than once");
}

}  // namespace
}  // namespace perch
