#include "engine/oip_client_codec.h"

#include <gtest/gtest.h>

namespace perch {
namespace {

TEST(OipClientCodecTest, EncodesInputsAsJsonArrays) {
  Tensor input{.name = "x", .datatype = DataType::kFp32, .shape = {1, 2}, .data = {}};
  AppendElement<float>(input.data, 1.5f);
  AppendElement<float>(input.data, -2.0f);
  const auto body = EncodeOipInferRequest({input}, {"probabilities"});
  ASSERT_TRUE(body.ok());
  EXPECT_EQ(*body, R"({"inputs":[{"data":[1.5,-2.0],"datatype":"FP32","name":"x","shape":[1,2]}],)"
                   R"("outputs":[{"name":"probabilities"}]})");
}

TEST(OipClientCodecTest, PassesTheRequestParametersThrough) {
  Tensor input{.name = "x", .datatype = DataType::kInt64, .shape = {1}, .data = {}};
  AppendElement<int64_t>(input.data, 3);
  const auto body = EncodeOipInferRequest({input}, {"y"},
                                          InferParameters{{"stream_id", std::string("mic-1")},
                                                          {"gain", int64_t{-2}},
                                                          {"ratio", 0.5},
                                                          {"loud", true}});
  ASSERT_TRUE(body.ok());
  EXPECT_EQ(*body, R"({"inputs":[{"data":[3],"datatype":"INT64","name":"x","shape":[1]}],)"
                   R"("outputs":[{"name":"y"}],)"
                   R"("parameters":{"gain":-2,"loud":true,"ratio":0.5,"stream_id":"mic-1"}})");
}

TEST(OipClientCodecTest, DecodesOutputsInTheOrderAsked) {
  const auto outputs = DecodeOipInferResponse(
      R"({"model_name": "m", "outputs": [
          {"name": "label", "datatype": "INT64", "shape": [2], "data": [1, 0]},
          {"name": "p", "datatype": "FP64", "shape": [2, 2], "data": [[0.25, 0.75], [1, 0]]}]})",
      {"p", "label"});
  ASSERT_TRUE(outputs.ok()) << outputs.status().message();
  ASSERT_EQ(outputs->size(), 2u);
  EXPECT_EQ((*outputs)[0].name, "p");
  EXPECT_EQ(ReadElement<double>((*outputs)[0].data, 1), 0.75);
  EXPECT_EQ(ReadElement<int64_t>((*outputs)[1].data, 0), 1);
}

TEST(OipClientCodecTest, GarbageIsABadGatewayNamingWhatIsWrong) {
  const std::pair<const char*, const char*> cases[] = {
      {"not json", "no \"outputs\" array"},
      {R"({"outputs": {}})", "no \"outputs\" array"},
      {R"({"outputs": []})", "no output 'p'"},
      {R"({"outputs": [{"name": "p", "datatype": "FP99", "shape": [1], "data": [1]}]})",
       "no known \"datatype\""},
      {R"({"outputs": [{"name": "p", "datatype": "FP32", "shape": [-1], "data": [1]}]})", "shape"},
      {R"({"outputs": [{"name": "p", "datatype": "FP32", "shape": [1], "data": ["a"]}]})",
       "not an array of FP32"},
      {R"({"outputs": [{"name": "p", "datatype": "UINT8", "shape": [1], "data": [300]}]})",
       "not an array of UINT8"},
      {R"({"outputs": [{"name": "p", "datatype": "FP32", "shape": [3], "data": [1]}]})",
       "output 'p'"},
  };
  for (const auto& [body, message] : cases) {
    const auto outputs = DecodeOipInferResponse(body, {"p"});
    ASSERT_FALSE(outputs.ok()) << body;
    EXPECT_EQ(outputs.status().code(), StatusCode::kBadGateway);
    EXPECT_NE(outputs.status().message().find(message), std::string::npos)
        << body << " -> " << outputs.status().message();
  }
}

TEST(OipClientCodecTest, ReadsTheSignatureFromModelMetadata) {
  const auto signature = DecodeOipModelMetadata(
      R"({"name": "iris", "platform": "sklearn",
          "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
          "outputs": [{"name": "p", "datatype": "FP64", "shape": [-1, 3]}]})");
  ASSERT_TRUE(signature.ok()) << signature.status().message();
  EXPECT_EQ(signature->inputs[0].shape, (Shape{-1, 4}));
  EXPECT_EQ(signature->outputs[0].datatype, DataType::kFp64);
  EXPECT_FALSE(DecodeOipModelMetadata(R"({"inputs": []})").ok());
  EXPECT_FALSE(DecodeOipModelMetadata(R"({"inputs": [], "outputs": []})").ok());
  EXPECT_EQ(DecodeOipModelMetadata("[").status().code(), StatusCode::kBadGateway);
}

}  // namespace
}  // namespace perch
