#include "http/credentials.h"

#include <gtest/gtest.h>

namespace perch::http {
namespace {

std::optional<std::string> TokenOf(std::string_view header) {
  auto token = TokenFromAuthorization(header);
  EXPECT_TRUE(token.ok()) << token.status().ToString();
  return token.ok() ? *token : std::nullopt;
}

TEST(Credentials, BearerInAnyCase) {
  EXPECT_EQ(TokenOf("Bearer abc"), "abc");
  EXPECT_EQ(TokenOf("bearer abc"), "abc");
  EXPECT_EQ(TokenOf("BEARER  abc "), "abc");
}

TEST(Credentials, BasicCarriesTheTokenAsPassword) {
  EXPECT_EQ(TokenOf("Basic cGVyY2g6c2VjcmV0"), "secret");  // perch:secret
  EXPECT_EQ(TokenOf("basic cGVyY2g6c2VjcmV0"), "secret");
  EXPECT_EQ(TokenOf("Basic cGVyY2g6OmE="), ":a");  // the password may hold a colon
}

TEST(Credentials, NoCredentials) {
  EXPECT_EQ(TokenOf(""), std::nullopt);
  EXPECT_EQ(TokenOf("Basic cGVyY2g6"), std::nullopt);  // "perch:" as skopeo sends it
}

TEST(Credentials, MalformedHeadersAreUnauthenticated) {
  for (const char* header :
       {"Token abc", "Bearer ", "Bearer", "Basic !!!", "Basic cGVyY2g=", "Digest x"}) {
    const auto token = TokenFromAuthorization(header);
    ASSERT_FALSE(token.ok()) << header;
    EXPECT_EQ(token.status().code(), StatusCode::kUnauthenticated) << header;
  }
}

TEST(Credentials, RequireToken) {
  Request request;
  EXPECT_EQ(RequireToken(request, "t0k3n").code(), StatusCode::kUnauthenticated);
  request.headers.Set("authorization", "Bearer wrong");
  EXPECT_EQ(RequireToken(request, "t0k3n").code(), StatusCode::kUnauthenticated);
  request.headers.Set("Authorization", "Bearer t0k3n");
  EXPECT_TRUE(RequireToken(request, "t0k3n").ok());
  EXPECT_EQ(RequireToken(request, "").code(), StatusCode::kUnauthenticated);
}

TEST(Credentials, TokensEqual) {
  EXPECT_TRUE(TokensEqual("abc", "abc"));
  EXPECT_FALSE(TokensEqual("abc", "abd"));
  EXPECT_FALSE(TokensEqual("abc", "abcd"));
}

}  // namespace
}  // namespace perch::http
