#include "tensor/json_codec.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>

namespace perch {
namespace {

Result<JsonInferRequest> Decode(const std::string& json, const std::string& binary = "") {
  return DecodeJsonInferRequest(json, binary, 64);
}

std::string Input(const std::string& datatype, const std::string& shape, const std::string& data) {
  return R"({"inputs":[{"name":"x","datatype":")" + datatype + R"(","shape":)" + shape +
         R"(,"data":)" + data + "}]}";
}

template <typename T>
std::vector<T> Values(const Tensor& tensor) {
  std::vector<T> values(tensor.data.size() / sizeof(T));
  std::memcpy(values.data(), tensor.data.data(), tensor.data.size());
  return values;
}

void ExpectError(const Result<JsonInferRequest>& result, const std::string& fragment) {
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(result.status().message().find(fragment), std::string::npos)
      << result.status().message();
}

TEST(JsonDecodeTest, FlatAndNestedDataAgree) {
  const auto flat = Decode(Input("FP32", "[2,2]", "[1,2.5,3,4]"));
  const auto nested = Decode(Input("FP32", "[2,2]", "[[1,2.5],[3,4]]"));
  ASSERT_TRUE(flat.ok()) << flat.status().message();
  ASSERT_TRUE(nested.ok());
  EXPECT_EQ(flat->request.inputs[0].data, nested->request.inputs[0].data);
  EXPECT_EQ(Values<float>(flat->request.inputs[0]), (std::vector<float>{1, 2.5f, 3, 4}));
}

TEST(JsonDecodeTest, IntegerExtremesSurvive) {
  const auto u64 = Decode(Input("UINT64", "[2]", "[0,18446744073709551615]"));
  ASSERT_TRUE(u64.ok());
  EXPECT_EQ(Values<uint64_t>(u64->request.inputs[0])[1], 18446744073709551615ull);
  const auto i64 = Decode(Input("INT64", "[2]", "[-9223372036854775808,9223372036854775807]"));
  ASSERT_TRUE(i64.ok());
  EXPECT_EQ(Values<int64_t>(i64->request.inputs[0])[0], INT64_MIN);
}

TEST(JsonDecodeTest, BoolAndBytes) {
  const auto flags = Decode(Input("BOOL", "[3]", "[true,false,true]"));
  ASSERT_TRUE(flags.ok());
  EXPECT_EQ(flags->request.inputs[0].data, std::string("\x01\x00\x01", 3));
  const auto bytes = Decode(Input("BYTES", "[2]", R"(["ab",""])"));
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ(bytes->request.inputs[0].data, std::string("\x02\0\0\0ab\0\0\0\0", 10));
}

TEST(JsonDecodeTest, IdOutputsAndBinaryChoices) {
  const auto decoded = Decode(
      R"({"id":"r1","reply_to":"answers/r1","parameters":{"binary_data_output":false,"timeout":2500},"inputs":[],
          "outputs":[{"name":"a","parameters":{"binary_data":true}},{"name":"b"}]})");
  ASSERT_TRUE(decoded.ok()) << decoded.status().message();
  EXPECT_EQ(decoded->request.id, "r1");
  EXPECT_EQ(decoded->reply_to, "answers/r1");
  EXPECT_EQ(decoded->request.timeout, std::chrono::microseconds(2500));
  EXPECT_EQ(decoded->request.requested_outputs, (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(decoded->WantsBinary("a"));
  EXPECT_FALSE(decoded->WantsBinary("b"));
}

TEST(JsonDecodeTest, PerOutputChoiceOverridesTheDefault) {
  const auto decoded = Decode(
      R"({"parameters":{"binary_data_output":true},"inputs":[],
          "outputs":[{"name":"a","parameters":{"binary_data":false}},{"name":"b"}]})");
  ASSERT_TRUE(decoded.ok()) << decoded.status().message();
  EXPECT_FALSE(decoded->WantsBinary("a"));
  EXPECT_TRUE(decoded->WantsBinary("b"));
}

TEST(JsonDecodeTest, BinaryInputsTakeTheirBytesInOrder) {
  std::string binary;
  const float values[] = {1.5f, -2.0f};
  binary.append(reinterpret_cast<const char*>(values), sizeof(values));
  binary.append("\x01\x00\x00\x00z", 5);
  const auto decoded = Decode(
      R"({"inputs":[{"name":"f","datatype":"FP32","shape":[2],"parameters":{"binary_data_size":8}},
                    {"name":"s","datatype":"BYTES","shape":[1],"parameters":{"binary_data_size":5}}]})",
      binary);
  ASSERT_TRUE(decoded.ok()) << decoded.status().message();
  EXPECT_EQ(Values<float>(decoded->request.inputs[0]), (std::vector<float>{1.5f, -2.0f}));
  EXPECT_EQ(decoded->request.inputs[1].data, std::string("\x01\0\0\0z", 5));
}

TEST(JsonDecodeTest, RefusesBadInput) {
  ExpectError(Decode("{not json"), "not valid JSON");
  ExpectError(Decode(std::string(1000, '[') + std::string(1000, ']')), "deeper than the limit");
  ExpectError(Decode("[]"), "must be a JSON object");
  ExpectError(Decode("{}"), "needs \"inputs\"");
  ExpectError(Decode(Input("FP31", "[1]", "[1]")), "unknown datatype \"FP31\"");
  ExpectError(Decode(Input("FP32", "[3]", "[1,2]")), "has 2 data elements but shape [3] needs 3");
  ExpectError(Decode(Input("FP32", "[-1]", "[1]")), "negative dimension");
  ExpectError(Decode(Input("FP32", "[4294967296,4294967296]", "[1]")), "fit in 64 bits");
  ExpectError(Decode(Input("UINT8", "[1]", "[300]")), "300");
  ExpectError(Decode(Input("INT8", "[1]", "[-129]")), "out of range for INT8");
  ExpectError(Decode(Input("INT32", "[1]", "[1.5]")), "where an integer is expected");
  ExpectError(Decode(Input("FP32", "[1]", "[\"x\"]")), "a string in its data");
  ExpectError(Decode(Input("FP32", "[1]", "[1e300]")), "out of range for FP32");
  ExpectError(Decode(Input("FP16", "[1]", "[70000]")), "out of range for FP16");
  ExpectError(Decode(Input("BOOL", "[1]", "[1]")), "true or false");
  ExpectError(Decode(Input("BYTES", "[1]", "[1]")), "a string");
  ExpectError(Decode(R"({"inputs":[{"datatype":"FP32","shape":[1],"data":[1]}]})"), "no \"name\"");
  ExpectError(Decode(R"({"inputs":[{"name":"x","datatype":"FP32","shape":[1]}]})"),
              "neither \"data\" nor");
  ExpectError(Decode(R"({"id":5,"inputs":[]})"), "\"id\" must be a string");
  ExpectError(Decode(R"({"parameters":{"timeout":-1},"inputs":[]})"), "\"timeout\"");
  ExpectError(Decode(R"({"inputs":[],"outputs":[{"name":"a","parameters":{"binary_data":1}}]})"),
              "true or false");
}

TEST(JsonDecodeTest, RequestParametersAreKeptButTheCodecsOwn) {
  const auto decoded =
      Decode(R"({"parameters":{"stream_id":"mic-1","gain":-2,"ratio":0.5,"loud":true,)"
             R"("timeout":1500,"binary_data_output":true},"inputs":[]})");
  ASSERT_TRUE(decoded.ok()) << decoded.status().message();
  EXPECT_EQ(decoded->request.parameters, (InferParameters{{"stream_id", std::string("mic-1")},
                                                          {"gain", int64_t{-2}},
                                                          {"ratio", 0.5},
                                                          {"loud", true}}));
  EXPECT_EQ(decoded->request.timeout, std::chrono::microseconds(1500));
  EXPECT_TRUE(decoded->all_outputs_binary);
  // The binary extension's JSON header carries them the same way.
  const std::string x("\x01\x00\x02\x00", 4);
  const auto binary =
      Decode(R"({"parameters":{"stream_id":"kitchen"},"inputs":[{"name":"x","datatype":"INT16",)"
             R"("shape":[2],"parameters":{"binary_data_size":4}}]})",
             x);
  ASSERT_TRUE(binary.ok()) << binary.status().message();
  EXPECT_EQ(binary->request.parameters, (InferParameters{{"stream_id", std::string("kitchen")}}));
  EXPECT_EQ(binary->request.inputs[0].data, x);
  const auto none = Decode(R"({"inputs":[]})");
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->request.parameters.empty());
}

TEST(JsonDecodeTest, RefusesBadRequestParameters) {
  const auto with = [](const std::string& parameters) {
    return Decode(R"({"parameters":)" + parameters + R"(,"inputs":[]})");
  };
  ExpectError(with(R"(["stream_id"])"), "\"parameters\" of the request must be an object");
  ExpectError(with(R"("mic-1")"), "must be an object, not a string");
  ExpectError(with(R"({"stream_id":{"id":"a"}})"),
              "parameter \"stream_id\" is an object; a parameter's value must be a string, a "
              "number or a boolean");
  ExpectError(with(R"({"stream_id":["a"]})"), "parameter \"stream_id\" is an array");
  ExpectError(with(R"({"stream_id":null})"), "parameter \"stream_id\" is null");
  ExpectError(with(R"({"big":18446744073709551615})"), "past 2^63-1; send it as a string");
  ExpectError(with(R"({"s":"a","s":"b"})"), "\"s\" is given twice");
  ExpectError(with(R"({"":1})"), "a parameter name must have 1 to 128 bytes");
  ExpectError(with(R"({")" + std::string(200, 'n') + R"(":1})"), "1 to 128 bytes, not 200");
  ExpectError(with(R"({"s":")" + std::string(5000, 'v') + R"("})"),
              "\"s\" is a string of 5000 bytes");
  std::string many = "{";
  for (int i = 0; i < 65; ++i) {
    many += (i > 0 ? "," : "") + fmt::format(R"("p{}":{})", i, i);
  }
  ExpectError(with(many + "}"), "at most 64 parameters");
}

TEST(JsonDecodeTest, RefusesBadBinary) {
  const std::string header =
      R"({"inputs":[{"name":"f","datatype":"FP32","shape":[2],"parameters":{"binary_data_size":8}}]})";
  ExpectError(Decode(header, std::string(4, '\0')), "only 4 bytes of binary data remain");
  ExpectError(Decode(header, std::string(12, '\0')), "4 bytes of binary data that no input");
  const std::string mismatch =
      R"({"inputs":[{"name":"f","datatype":"FP32","shape":[3],"parameters":{"binary_data_size":8}}]})";
  ExpectError(Decode(mismatch, std::string(8, '\0')), "needs 3 elements");
  const std::string bytes =
      R"({"inputs":[{"name":"s","datatype":"BYTES","shape":[1],"parameters":{"binary_data_size":6}}]})";
  ExpectError(Decode(bytes, std::string("\x09\0\0\0ab", 6)), "claims 9 bytes");
  const std::string negative =
      R"({"inputs":[{"name":"f","datatype":"FP32","shape":[2],"parameters":{"binary_data_size":-8}}]})";
  ExpectError(Decode(negative, ""), "non-negative integer");
}

TEST(JsonEncodeTest, JsonAndBinaryOutputs) {
  InferResponse response{.model_name = "m", .model_version = "2", .id = "q\"1", .outputs = {}};
  Tensor probabilities{.name = "p", .datatype = DataType::kFp32, .shape = {2}, .data = {}};
  const float values[] = {0.25f, 1e-7f};
  probabilities.data.assign(reinterpret_cast<const char*>(values), sizeof(values));
  Tensor labels{.name = "l", .datatype = DataType::kBytes, .shape = {1}, .data = {}};
  AppendBytesElement(labels.data, "cat");
  response.outputs = {probabilities, labels};

  JsonInferRequest all_json;
  const auto encoded = EncodeJsonInferResponse(response, all_json);
  ASSERT_TRUE(encoded.ok());
  EXPECT_FALSE(encoded->has_binary);
  EXPECT_EQ(encoded->body, R"({"model_name":"m","model_version":"2","id":"q\"1","outputs":[)"
                           R"({"name":"p","datatype":"FP32","shape":[2],"data":[0.25,1e-07]},)"
                           R"({"name":"l","datatype":"BYTES","shape":[1],"data":["cat"]}]})");

  JsonInferRequest binary_p;
  binary_p.binary_choices = {{"p", true}};
  const auto mixed = EncodeJsonInferResponse(response, binary_p);
  ASSERT_TRUE(mixed.ok());
  EXPECT_TRUE(mixed->has_binary);
  EXPECT_EQ(mixed->body.substr(mixed->json_size), probabilities.data);
  EXPECT_NE(mixed->body.substr(0, mixed->json_size).find(R"("parameters":{"binary_data_size":8})"),
            std::string::npos);
}

TEST(JsonEncodeTest, NamesTheArtifactThatAnswered) {
  InferResponse response{.model_name = "m", .model_version = "1", .id = {}, .outputs = {}};
  response.artifact_digest = "sha256:abc";
  const auto encoded = EncodeJsonInferResponse(response, JsonInferRequest{});
  ASSERT_TRUE(encoded.ok());
  EXPECT_EQ(encoded->body,
            R"({"model_name":"m","model_version":"1","parameters":{"perch.digest":"sha256:abc"},)"
            R"("outputs":[]})");
}

TEST(JsonEncodeTest, NonUtf8BytesNeedBinary) {
  InferResponse response;
  Tensor raw{.name = "raw", .datatype = DataType::kBytes, .shape = {1}, .data = {}};
  AppendBytesElement(raw.data, "\xff\xfe");
  response.outputs = {raw};
  const auto encoded = EncodeJsonInferResponse(response, JsonInferRequest{});
  ASSERT_FALSE(encoded.ok());
  EXPECT_NE(encoded.status().message().find("binary_data"), std::string::npos);
  JsonInferRequest binary;
  binary.all_outputs_binary = true;
  EXPECT_TRUE(EncodeJsonInferResponse(response, binary).ok());
}

}  // namespace
}  // namespace perch
