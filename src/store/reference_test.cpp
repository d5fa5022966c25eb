#include "store/reference.h"

#include <gtest/gtest.h>

namespace perch {
namespace {

TEST(ReferenceTest, RepositoryNamesFollowTheOciGrammar) {
  for (const char* good : {"a", "wakeword/hey_jarvis", "a.b_c__d---e/f9", "0/1/2"}) {
    EXPECT_TRUE(IsValidRepositoryName(good)) << good;
  }
  for (const char* bad : {"", "A", "a/", "/a", "a//b", "..", "a/../b", "%2e%2e", "a/%2e%2e/b",
                          "a..b", "a___b", "a_-b", "-a", "a-", "a b", "a\\b", "a/./b"}) {
    EXPECT_FALSE(IsValidRepositoryName(bad)) << bad;
  }
  EXPECT_TRUE(IsValidRepositoryName(std::string(255, 'a')));
  EXPECT_FALSE(IsValidRepositoryName(std::string(256, 'a')));
}

TEST(ReferenceTest, TagsFollowTheOciGrammar) {
  for (const char* good : {"1", "latest", "v1.2.3-rc_1", "_x"}) {
    EXPECT_TRUE(IsValidTag(good)) << good;
  }
  for (const char* bad : {"", ".x", "-x", "..", "a/b", "a:b", "a%2e"}) {
    EXPECT_FALSE(IsValidTag(bad)) << bad;
  }
  EXPECT_TRUE(IsValidTag(std::string(128, 'a')));
  EXPECT_FALSE(IsValidTag(std::string(129, 'a')));
}

TEST(ReferenceTest, ParsesHostRepositoryTagAndDigest) {
  auto reference = Reference::Parse("127.0.0.1:8080/wakeword/hey_jarvis:1");
  ASSERT_TRUE(reference.ok()) << reference.status().message();
  EXPECT_EQ(reference->registry, "127.0.0.1:8080");
  EXPECT_EQ(reference->repository, "wakeword/hey_jarvis");
  EXPECT_EQ(reference->tag, "1");
  EXPECT_EQ(reference->Identifier(), "1");
  EXPECT_EQ(reference->ToString(), "127.0.0.1:8080/wakeword/hey_jarvis:1");

  auto untagged = Reference::Parse("localhost/m");
  ASSERT_TRUE(untagged.ok());
  EXPECT_EQ(untagged->tag, "latest");

  const std::string digest = "sha256:" + std::string(64, 'b');
  auto pinned = Reference::Parse("[::1]:5000/m@" + digest);
  ASSERT_TRUE(pinned.ok()) << pinned.status().message();
  EXPECT_EQ(pinned->registry, "[::1]:5000");
  EXPECT_TRUE(pinned->tag.empty());
  EXPECT_EQ(pinned->Identifier(), digest);
  EXPECT_EQ(pinned->ToString(), "[::1]:5000/m@" + digest);
}

TEST(ReferenceTest, RefusesMalformedReferencesWithTheReason) {
  const struct {
    const char* text;
    const char* reason;
  } cases[] = {
      {"hey_jarvis:1", "has no registry"},
      {"host:80x/m", "not a registry host"},
      {"host/UPPER", "repository"},
      {"host/a/../b", "repository"},
      {"host/%2e%2e/b", "repository"},
      {"host/m:bad/tag", "tag"},
      {"host/m:-x", "tag"},
      {"host/m@sha256:abc", "64 lowercase hex"},
      {"host/m@md5:abc", "not supported"},
  };
  for (const auto& test : cases) {
    const auto parsed = Reference::Parse(test.text);
    ASSERT_FALSE(parsed.ok()) << test.text;
    EXPECT_NE(parsed.status().message().find(test.reason), std::string::npos)
        << test.text << ": " << parsed.status().message();
  }
}

}  // namespace
}  // namespace perch
