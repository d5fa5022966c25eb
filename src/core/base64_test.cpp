#include "core/base64.h"

#include <gtest/gtest.h>

namespace perch {
namespace {

TEST(Base64Test, RoundTripsAndAcceptsBothAlphabets) {
  for (const std::string text : {"", "f", "fo", "foo", "foob", "fooba", "foobar"}) {
    EXPECT_EQ(*Base64Decode(Base64Encode(text)), text);
  }
  EXPECT_EQ(Base64Encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(*Base64Decode("-_8"), *Base64Decode("+/8="));
  EXPECT_FALSE(Base64Decode("ab cd").ok());
  EXPECT_FALSE(Base64Decode("a").ok());
}

}  // namespace
}  // namespace perch
