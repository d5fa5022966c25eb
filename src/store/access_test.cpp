#include "store/access.h"

#include <gtest/gtest.h>

namespace perch {
namespace {

const AccessTokens kTokens{
    .admin = "admin-token-0123456789", .device = "device-token-0123456789", .anonymous_pull = true};

// base64("user:" + password)
std::string Basic(const std::string& user_password) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < user_password.size(); i += 3) {
    const auto n = (static_cast<uint32_t>(static_cast<unsigned char>(user_password[i])) << 16) |
                   (static_cast<uint32_t>(static_cast<unsigned char>(user_password[i + 1])) << 8) |
                   static_cast<unsigned char>(user_password[i + 2]);
    for (int shift = 18; shift >= 0; shift -= 6) {
      out.push_back(kAlphabet[(n >> shift) & 63]);
    }
  }
  const size_t rest = user_password.size() - i;
  if (rest > 0) {
    uint32_t n = static_cast<uint32_t>(static_cast<unsigned char>(user_password[i])) << 16;
    if (rest == 2) {
      n |= static_cast<uint32_t>(static_cast<unsigned char>(user_password[i + 1])) << 8;
    }
    out.push_back(kAlphabet[(n >> 18) & 63]);
    out.push_back(kAlphabet[(n >> 12) & 63]);
    out.push_back(rest == 2 ? kAlphabet[(n >> 6) & 63] : '=');
    out.push_back('=');
  }
  return "Basic " + out;
}

TEST(AccessTest, AdminMayPullAndPushWithBearerOrBasic) {
  for (const std::string& header :
       {std::string("Bearer admin-token-0123456789"), Basic("anything:admin-token-0123456789"),
        std::string("bearer admin-token-0123456789")}) {
    EXPECT_TRUE(Authorize(kTokens, header, AccessKind::kPull).ok()) << header;
    EXPECT_TRUE(Authorize(kTokens, header, AccessKind::kPush).ok()) << header;
  }
}

TEST(AccessTest, DeviceMayPullButNotPush) {
  const std::string header = "Bearer device-token-0123456789";
  EXPECT_TRUE(Authorize(kTokens, header, AccessKind::kPull).ok());
  EXPECT_EQ(Authorize(kTokens, header, AccessKind::kPush).code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(Authorize(kTokens, Basic("x:device-token-0123456789"), AccessKind::kPush).code(),
            StatusCode::kPermissionDenied);
}

TEST(AccessTest, AnonymousPullsFollowTheSetting) {
  EXPECT_TRUE(Authorize(kTokens, "", AccessKind::kPull).ok());
  EXPECT_TRUE(Authorize(kTokens, Basic(":"), AccessKind::kPull).ok());
  EXPECT_EQ(Authorize(kTokens, "", AccessKind::kPush).code(), StatusCode::kUnauthenticated);
  AccessTokens closed = kTokens;
  closed.anonymous_pull = false;
  EXPECT_EQ(Authorize(closed, "", AccessKind::kPull).code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(Authorize(closed, Basic("user:"), AccessKind::kPull).code(),
            StatusCode::kUnauthenticated);
}

TEST(AccessTest, WrongOrMalformedCredentialsAreRefused) {
  for (const std::string& header :
       {std::string("Bearer nope"), std::string("Bearer admin-token-012345678"),
        std::string("Bearer admin-token-01234567890"), std::string("Token admin-token-0123456789"),
        std::string("Basic !!!"), Basic("no-colon-here")}) {
    EXPECT_EQ(Authorize(kTokens, header, AccessKind::kPull).code(), StatusCode::kUnauthenticated)
        << header;
  }
}

TEST(AccessTest, AnEmptyDeviceTokenMatchesNothing) {
  AccessTokens no_device = kTokens;
  no_device.device.clear();
  EXPECT_EQ(Authorize(no_device, "Bearer ", AccessKind::kPull).code(),
            StatusCode::kUnauthenticated);
}

TEST(AccessTest, GeneratedTokensAreLongAndDifferent) {
  auto a = GenerateToken();
  auto b = GenerateToken();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->size(), 64u);
  EXPECT_NE(*a, *b);
}

TEST(AccessTest, KindsHaveNames) {
  EXPECT_EQ(ToString(AccessKind::kPush), "push");
  EXPECT_EQ(AccessKindFromString("pull"), AccessKind::kPull);
  EXPECT_FALSE(AccessKindFromString("admin").has_value());
}

}  // namespace
}  // namespace perch
