#include "bundle/archive_library.h"

#include <gtest/gtest.h>

#include <string>

namespace perch::bundle {
namespace {

TEST(ArchiveLibraryTest, LoadsLibarchiveOnceAndItWorks) {
  const auto first = LoadArchive();
  ASSERT_TRUE(first.ok()) << first.status().message();
  const auto second = LoadArchive();
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(*first, *second);
  const ArchiveLibrary& api = **first;
  archive* const reader = api.read_new();
  ASSERT_NE(reader, nullptr);
  EXPECT_EQ(api.read_support_format_tar(reader), ARCHIVE_OK);
  const std::string not_tar = "not a tar file at all, and far too short to be one";
  EXPECT_EQ(api.read_open_memory(reader, not_tar.data(), not_tar.size()), ARCHIVE_FATAL);
  EXPECT_NE(api.error_string(reader), nullptr);
  EXPECT_EQ(api.read_free(reader), ARCHIVE_OK);
}

TEST(ArchiveLibraryTest, AMissingLibraryIsUnavailableAndNamesThePackage) {
  const auto opened = OpenArchiveLibrary("libperch-no-such-archive.so.13");
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(opened.status().message().find("libperch-no-such-archive.so.13"), std::string::npos)
      << opened.status().message();
  EXPECT_NE(opened.status().message().find("libarchive13"), std::string::npos);
}

TEST(ArchiveLibraryTest, ALibraryThatIsNotLibarchiveIsUnavailableAndNamesTheMissingFunction) {
  const auto opened = OpenArchiveLibrary("libz.so.1");
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(opened.status().message().find("has no function archive_error_string"),
            std::string::npos)
      << opened.status().message();
}

}  // namespace
}  // namespace perch::bundle
