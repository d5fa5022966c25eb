#include "core/status.h"

#include <gtest/gtest.h>

namespace perch {
namespace {

TEST(StatusTest, CodeNamesRoundTrip) {
  for (const auto code : {StatusCode::kOk, StatusCode::kInvalidArgument, StatusCode::kNotFound,
                          StatusCode::kUnavailable, StatusCode::kPermissionDenied}) {
    EXPECT_EQ(StatusCodeFromString(ToString(code)), code);
  }
  EXPECT_FALSE(StatusCodeFromString("NoSuchCode").has_value());
}

TEST(StatusTest, ToStringCarriesCodeAndMessage) {
  EXPECT_EQ(Status::Ok().ToString(), "Ok");
  EXPECT_EQ(NotFound("model 'x'").ToString(), "NotFound: model 'x'");
}

Result<int> Half(int value) {
  if (value % 2 != 0) {
    return InvalidArgument("odd");
  }
  return value / 2;
}

Result<int> Quarter(int value) {
  PERCH_ASSIGN_OR_RETURN(const int half, Half(value));
  PERCH_ASSIGN_OR_RETURN(const int quarter, Half(half));
  return quarter;
}

TEST(ResultTest, HoldsValueOrError) {
  const auto good = Quarter(8);
  ASSERT_TRUE(good.ok());
  EXPECT_EQ(*good, 2);
  EXPECT_TRUE(good.status().ok());

  const auto bad = Quarter(6);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().message(), "odd");
}

}  // namespace
}  // namespace perch
