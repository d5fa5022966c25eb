#include "engine/oip_client_codec.h"

#include <gtest/gtest.h>

#include <limits>

#include "tensor/half.h"

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

// Written without a JSON tree: every datatype, escaping, and the values
// JSON has no number for, as nlohmann wrote them before.
TEST(OipClientCodecTest, EncodesEveryDatatypeAndEscapesStrings) {
  Tensor flags{.name = "f", .datatype = DataType::kBool, .shape = {2}, .data = {}};
  flags.data = std::string("\1\0", 2);
  Tensor half{.name = "h", .datatype = DataType::kFp16, .shape = {1}, .data = {}};
  AppendElement<uint16_t>(half.data, FloatToHalf(0.5f));
  Tensor small{.name = "u", .datatype = DataType::kUint8, .shape = {2}, .data = {}};
  AppendElement<uint8_t>(small.data, 255);
  AppendElement<uint8_t>(small.data, 0);
  Tensor odd{.name = "d", .datatype = DataType::kFp64, .shape = {3}, .data = {}};
  AppendElement<double>(odd.data, std::numeric_limits<double>::quiet_NaN());
  AppendElement<double>(odd.data, 1e300);
  AppendElement<double>(odd.data, -0.1);
  Tensor text{.name = "q\"\\\n", .datatype = DataType::kBytes, .shape = {2}, .data = {}};
  AppendBytesElement(text.data, "a\"b");
  AppendBytesElement(text.data, "\xff");
  const auto body = EncodeOipInferRequest({flags, half, small, odd, text}, {"y\t"},
                                          InferParameters{{"s", std::string("\xc3\xa9")}});
  ASSERT_TRUE(body.ok()) << body.status().message();
  EXPECT_EQ(*body, R"({"inputs":[{"data":[true,false],"datatype":"BOOL","name":"f","shape":[2]},)"
                   R"({"data":[0.5],"datatype":"FP16","name":"h","shape":[1]},)"
                   R"({"data":[255,0],"datatype":"UINT8","name":"u","shape":[2]},)"
                   R"({"data":[null,1e+300,-0.1],"datatype":"FP64","name":"d","shape":[3]},)"
                   R"({"data":["a\"b",")"
                   "\xef\xbf\xbd"  // U+FFFD for the invalid byte
                   R"("],"datatype":"BYTES","name":"q\"\\\n","shape":[2]}],)"
                   R"("outputs":[{"name":"y\t"}],"parameters":{"s":"é"}})");
  Tensor short_data{.name = "x", .datatype = DataType::kFp32, .shape = {2}, .data = {}};
  AppendElement<float>(short_data.data, 1.0f);
  EXPECT_EQ(EncodeOipInferRequest({short_data}, {"y"}).status().code(),
            StatusCode::kInvalidArgument);
}

TEST(OipClientCodecTest, DecodesEveryDatatypeWithinItsRange) {
  const auto outputs = DecodeOipInferResponse(
      R"({"outputs": [
          {"name": "b", "datatype": "BOOL", "shape": [2], "data": [true, false]},
          {"name": "h", "datatype": "FP16", "shape": [1], "data": [2]},
          {"name": "u", "datatype": "UINT64", "shape": [1], "data": [18446744073709551615]},
          {"name": "i", "datatype": "INT8", "shape": [2], "data": [-128, 127]},
          {"name": "s", "datatype": "BYTES", "shape": [1], "data": ["caf\u00e9"]}]})",
      {"b", "h", "u", "i", "s"});
  ASSERT_TRUE(outputs.ok()) << outputs.status().message();
  EXPECT_EQ((*outputs)[0].data, std::string("\1\0", 2));
  EXPECT_EQ(HalfToFloat(ReadElement<uint16_t>((*outputs)[1].data, 0)), 2.0f);
  EXPECT_EQ(ReadElement<uint64_t>((*outputs)[2].data, 0), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(ReadElement<int8_t>((*outputs)[3].data, 0), -128);
  EXPECT_EQ((*outputs)[4].data.substr((*outputs)[4].data.size() - 5), "caf\xc3\xa9");
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
      {R"({"outputs": [{"name": "p", "datatype": "INT64", "shape": [1], "data": [1.5]}]})",
       "not an array of INT64"},
      {R"({"outputs": [{"name": "p", "datatype": "INT8", "shape": [1], "data": [-129]}]})",
       "not an array of INT8"},
      {R"({"outputs": [{"name": "p", "datatype": "INT64", "shape": [1],)"
       R"( "data": [18446744073709551615]}]})",
       "not an array of INT64"},
      {R"({"outputs": [{"name": "p", "datatype": "BOOL", "shape": [1], "data": [1]}]})",
       "not an array of BOOL"},
      {R"({"outputs": [{"name": "p", "datatype": "BYTES", "shape": [1], "data": [1]}]})",
       "not an array of BYTES"},
      {R"({"outputs": [{"name": "p", "datatype": "FP16", "shape": [1], "data": [null]}]})",
       "not an array of FP16"},
      {R"({"outputs": [{"name": "p", "datatype": "FP32", "shape": [1]}]})", "\"data\""},
      {R"({"outputs": [{"name": "p", "datatype": "FP32", "shape": 1, "data": [1]}]})",
       "no \"shape\" array"},
      {R"({"outputs": [{"name": "p", "shape": [1], "data": [1]}]})", "no known \"datatype\""},
      {R"({"outputs": [7, {"name": 3}, {"name": "q"}]})", "no output 'p'"},
      {R"([{"outputs": []}])", "no \"outputs\" array"},
      {R"({"outputs": [{"name": "p", "datatype": "FP32", "shape": [1], "data": [1]}])",
       "no \"outputs\" array"},
  };
  for (const auto& [body, message] : cases) {
    const auto outputs = DecodeOipInferResponse(body, {"p"});
    ASSERT_FALSE(outputs.ok()) << body;
    EXPECT_EQ(outputs.status().code(), StatusCode::kBadGateway);
    EXPECT_NE(outputs.status().message().find(message), std::string::npos)
        << body << " -> " << outputs.status().message();
  }
}

TEST(OipClientCodecTest, DataNestedTooDeeplyIsABadGateway) {
  const std::string deep = std::string(100, '[') + "1" + std::string(100, ']');
  const auto outputs = DecodeOipInferResponse(
      R"({"outputs": [{"name": "p", "datatype": "FP32", "shape": [1], "data": )" + deep + "}]}",
      {"p"});
  EXPECT_EQ(outputs.status().code(), StatusCode::kBadGateway);
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
