#include "tensor/infer_parameters.h"

#include <gtest/gtest.h>

#include <limits>

namespace perch {
namespace {

void ExpectInvalid(const Status& status, const std::string& fragment) {
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find(fragment), std::string::npos) << status.message();
}

TEST(InferParametersTest, KeepsEachTypeTheProtocolAllows) {
  InferParameters parameters;
  ASSERT_TRUE(AddInferParameter(parameters, "stream_id", std::string("mic-1")).ok());
  ASSERT_TRUE(AddInferParameter(parameters, "gain", int64_t{-3}).ok());
  ASSERT_TRUE(AddInferParameter(parameters, "ratio", 0.25).ok());
  ASSERT_TRUE(AddInferParameter(parameters, "loud", true).ok());
  EXPECT_EQ(parameters.at("stream_id"), InferParameterValue(std::string("mic-1")));
  EXPECT_EQ(parameters.at("gain"), InferParameterValue(int64_t{-3}));
  EXPECT_EQ(parameters.at("ratio"), InferParameterValue(0.25));
  EXPECT_EQ(parameters.at("loud"), InferParameterValue(true));
  EXPECT_EQ(InferParameterTypeName(parameters.at("stream_id")), "a string");
  EXPECT_EQ(InferParameterTypeName(parameters.at("gain")), "an integer");
  EXPECT_EQ(InferParameterTypeName(parameters.at("ratio")), "a number");
  EXPECT_EQ(InferParameterTypeName(parameters.at("loud")), "a boolean");
}

TEST(InferParametersTest, RefusesWhatIsPastTheLimits) {
  InferParameters parameters;
  ASSERT_TRUE(AddInferParameter(parameters, "a", int64_t{1}).ok());
  ExpectInvalid(AddInferParameter(parameters, "a", int64_t{2}), "\"a\" is given twice");
  ExpectInvalid(AddInferParameter(parameters, "", int64_t{1}), "1 to 128 bytes, not 0");
  ExpectInvalid(AddInferParameter(parameters, std::string(129, 'n'), int64_t{1}),
                "1 to 128 bytes, not 129");
  ExpectInvalid(AddInferParameter(parameters, "long", std::string(4097, 'v')),
                "\"long\" is a string of 4097 bytes; at most 4096 fit");
  EXPECT_TRUE(AddInferParameter(parameters, "fits", std::string(4096, 'v')).ok());
  ExpectInvalid(AddInferParameter(parameters, "nan", std::numeric_limits<double>::quiet_NaN()),
                "\"nan\" must be a finite number");
  ExpectInvalid(AddInferParameter(parameters, "inf", std::numeric_limits<double>::infinity()),
                "finite");
  while (parameters.size() < kMaxInferParameters) {
    ASSERT_TRUE(AddInferParameter(parameters, "p" + std::to_string(parameters.size()), true).ok());
  }
  ExpectInvalid(AddInferParameter(parameters, "one_more", true),
                "at most 64 parameters; \"one_more\" is one too many");
}

TEST(InferParametersTest, TransportParametersAreTheCodecsOwn) {
  EXPECT_TRUE(IsTransportParameter("timeout"));
  EXPECT_TRUE(IsTransportParameter("binary_data_output"));
  EXPECT_FALSE(IsTransportParameter("stream_id"));
}

}  // namespace
}  // namespace perch
