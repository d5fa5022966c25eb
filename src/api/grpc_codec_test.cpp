#include "api/grpc_codec.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>

namespace perch::grpc_api {
namespace {

inference::ModelInferRequest RequestWith(const std::string& datatype, std::vector<int64_t> shape) {
  inference::ModelInferRequest request;
  request.set_model_name("m");
  auto* input = request.add_inputs();
  input->set_name("x");
  input->set_datatype(datatype);
  for (const int64_t dim : shape) {
    input->add_shape(dim);
  }
  return request;
}

void ExpectInvalid(const Result<DecodedInfer>& decoded, const std::string& fragment) {
  ASSERT_FALSE(decoded.ok());
  EXPECT_EQ(decoded.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(decoded.status().message().find(fragment), std::string::npos)
      << decoded.status().message();
}

TEST(GrpcCodecTest, DecodesTypedContents) {
  auto request = RequestWith("INT16", {2});
  request.mutable_inputs(0)->mutable_contents()->add_int_contents(-3);
  request.mutable_inputs(0)->mutable_contents()->add_int_contents(300);
  (*request.mutable_parameters())["timeout"].set_int64_param(1500);
  request.add_outputs()->set_name("y");
  const auto decoded = DecodeInferRequest(request);
  ASSERT_TRUE(decoded.ok()) << decoded.status().message();
  EXPECT_FALSE(decoded->raw_outputs);
  const Tensor& x = decoded->request.inputs[0];
  ASSERT_EQ(x.data.size(), 4u);
  int16_t values[2];
  std::memcpy(values, x.data.data(), 4);
  EXPECT_EQ(values[0], -3);
  EXPECT_EQ(values[1], 300);
  EXPECT_EQ(decoded->request.requested_outputs, (std::vector<std::string>{"y"}));
  EXPECT_EQ(decoded->request.timeout, std::chrono::microseconds(1500));
}

TEST(GrpcCodecTest, DecodesRawContents) {
  auto request = RequestWith("FP16", {2});
  request.add_raw_input_contents(std::string("\x00\x3c\x00\xc0", 4));
  const auto decoded = DecodeInferRequest(request);
  ASSERT_TRUE(decoded.ok()) << decoded.status().message();
  EXPECT_TRUE(decoded->raw_outputs);
  EXPECT_EQ(decoded->request.inputs[0].data.size(), 4u);
}

TEST(GrpcCodecTest, RefusesBadInput) {
  ExpectInvalid(DecodeInferRequest(RequestWith("FLOAT", {1})), "unknown datatype \"FLOAT\"");
  ExpectInvalid(DecodeInferRequest(RequestWith("FP32", {-2})), "negative");

  auto too_few = RequestWith("FP32", {3});
  too_few.mutable_inputs(0)->mutable_contents()->add_fp32_contents(1);
  ExpectInvalid(DecodeInferRequest(too_few), "1 values in contents.fp32_contents");

  auto wrong_field = RequestWith("FP32", {1});
  wrong_field.mutable_inputs(0)->mutable_contents()->add_int64_contents(1);
  ExpectInvalid(DecodeInferRequest(wrong_field), "field of another datatype");

  auto out_of_range = RequestWith("UINT8", {1});
  out_of_range.mutable_inputs(0)->mutable_contents()->add_uint_contents(256);
  ExpectInvalid(DecodeInferRequest(out_of_range), "out of range for UINT8");

  auto fp16_typed = RequestWith("FP16", {1});
  ExpectInvalid(DecodeInferRequest(fp16_typed), "raw_input_contents");

  auto raw_size = RequestWith("FP32", {2});
  raw_size.add_raw_input_contents(std::string(7, '\0'));
  ExpectInvalid(DecodeInferRequest(raw_size), "7 bytes");

  auto both = RequestWith("FP32", {1});
  both.mutable_inputs(0)->mutable_contents()->add_fp32_contents(1);
  both.add_raw_input_contents(std::string(4, '\0'));
  ExpectInvalid(DecodeInferRequest(both), "use one or the other");

  auto count = RequestWith("FP32", {1});
  count.add_raw_input_contents(std::string(4, '\0'));
  count.add_raw_input_contents(std::string(4, '\0'));
  ExpectInvalid(DecodeInferRequest(count), "1 inputs but 2 raw_input_contents");

  auto timeout = RequestWith("FP32", {0});
  (*timeout.mutable_parameters())["timeout"].set_string_param("soon");
  ExpectInvalid(DecodeInferRequest(timeout), "\"timeout\"");
}

TEST(GrpcCodecTest, RequestParametersAreKeptButTimeout) {
  auto request = RequestWith("FP32", {0});
  auto& parameters = *request.mutable_parameters();
  parameters["stream_id"].set_string_param("mic-1");
  parameters["gain"].set_int64_param(-2);
  parameters["ratio"].set_double_param(0.5);
  parameters["loud"].set_bool_param(true);
  parameters["count"].set_uint64_param(7);
  parameters["timeout"].set_int64_param(1500);
  const auto decoded = DecodeInferRequest(request);
  ASSERT_TRUE(decoded.ok()) << decoded.status().message();
  EXPECT_EQ(decoded->request.parameters, (InferParameters{{"stream_id", std::string("mic-1")},
                                                          {"gain", int64_t{-2}},
                                                          {"ratio", 0.5},
                                                          {"loud", true},
                                                          {"count", int64_t{7}}}));
  EXPECT_EQ(decoded->request.timeout, std::chrono::microseconds(1500));
}

TEST(GrpcCodecTest, RefusesBadRequestParameters) {
  const auto with = [](const std::function<void(inference::ModelInferRequest&)>& set) {
    auto request = RequestWith("FP32", {0});
    set(request);
    return DecodeInferRequest(request);
  };
  ExpectInvalid(with([](auto& r) { (*r.mutable_parameters())["stream_id"]; }),
                "parameter \"stream_id\" has no value");
  ExpectInvalid(
      with([](auto& r) { (*r.mutable_parameters())["big"].set_uint64_param(UINT64_MAX); }),
      "\"big\" is a uint64_param past 2^63-1");
  ExpectInvalid(with([](auto& r) {
                  (*r.mutable_parameters())["s"].set_string_param(std::string(5000, 'v'));
                }),
                "\"s\" is a string of 5000 bytes");
  ExpectInvalid(
      with([](auto& r) { (*r.mutable_parameters())[std::string(200, 'n')].set_bool_param(true); }),
      "1 to 128 bytes, not 200");
  ExpectInvalid(
      with([](auto& r) {
        (*r.mutable_parameters())["nan"].set_double_param(std::numeric_limits<double>::quiet_NaN());
      }),
      "\"nan\" must be a finite number");
  ExpectInvalid(with([](auto& r) {
                  for (int i = 0; i < 65; ++i) {
                    (*r.mutable_parameters())["p" + std::to_string(i)].set_int64_param(i);
                  }
                }),
                "at most 64 parameters");
  ExpectInvalid(
      with([](auto& r) { (*r.mutable_parameters())["timeout"].set_string_param("soon"); }),
      "\"timeout\" must be a non-negative int64_param");
}

TEST(GrpcCodecTest, EncodesTypedOrRaw) {
  InferResponse response{.model_name = "m", .model_version = "1", .id = "r", .outputs = {}};
  Tensor y{.name = "y", .datatype = DataType::kInt64, .shape = {1}, .data = std::string(8, '\0')};
  y.data[0] = 7;
  response.outputs = {y};

  inference::ModelInferResponse typed;
  EncodeInferResponse(response, /*raw_outputs=*/false, typed);
  EXPECT_EQ(typed.id(), "r");
  EXPECT_EQ(typed.parameters_size(), 0);
  response.artifact_digest = "sha256:abc";
  inference::ModelInferResponse named;
  EncodeInferResponse(response, /*raw_outputs=*/false, named);
  EXPECT_EQ(named.parameters().at("perch.digest").string_param(), "sha256:abc");
  ASSERT_EQ(typed.outputs(0).contents().int64_contents_size(), 1);
  EXPECT_EQ(typed.outputs(0).contents().int64_contents(0), 7);
  EXPECT_EQ(typed.raw_output_contents_size(), 0);

  inference::ModelInferResponse raw;
  EncodeInferResponse(response, /*raw_outputs=*/true, raw);
  ASSERT_EQ(raw.raw_output_contents_size(), 1);
  EXPECT_EQ(raw.raw_output_contents(0), y.data);

  // FP16 has no typed field: the whole answer goes raw.
  response.outputs.push_back(
      Tensor{.name = "h", .datatype = DataType::kFp16, .shape = {1}, .data = std::string(2, '\0')});
  inference::ModelInferResponse mixed;
  EncodeInferResponse(response, /*raw_outputs=*/false, mixed);
  EXPECT_EQ(mixed.raw_output_contents_size(), 2);
}

TEST(GrpcCodecTest, MapsEveryStatusCode) {
  EXPECT_EQ(ToGrpcStatus(NotFound("x")).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(ToGrpcStatus(ResourceExhausted("x")).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(ToGrpcStatus(InvalidArgument("bad")).error_message(), "bad");
  EXPECT_TRUE(ToGrpcStatus(Status::Ok()).ok());
}

}  // namespace
}  // namespace perch::grpc_api
