#include "http/curl_library.h"

#include <gtest/gtest.h>

#include <string>

namespace perch::http {
namespace {

TEST(CurlLibraryTest, LoadsLibcurlOnceAndItWorks) {
  const auto first = LoadCurl();
  ASSERT_TRUE(first.ok()) << first.status().message();
  const auto second = LoadCurl();
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(*first, *second);
  const CurlLibrary& api = **first;
  EXPECT_EQ(std::string(api.easy_strerror(CURLE_OK)), "No error");
  CURL* const curl = api.easy_init();
  ASSERT_NE(curl, nullptr);
  EXPECT_EQ(api.easy_setopt(curl, CURLOPT_URL, "http://127.0.0.1:1/"), CURLE_OK);
  api.easy_cleanup(curl);
}

TEST(CurlLibraryTest, AMissingLibraryIsUnavailableAndNamesThePackage) {
  const auto opened = OpenCurlLibrary("libperch-no-such-curl.so.4");
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(opened.status().message().find("libperch-no-such-curl.so.4"), std::string::npos)
      << opened.status().message();
  EXPECT_NE(opened.status().message().find("libcurl4"), std::string::npos);
}

TEST(CurlLibraryTest, ALibraryThatIsNotLibcurlIsUnavailableAndNamesTheMissingFunction) {
  // zlib is loaded in every perch process (and this test): it has no curl_* functions.
  const auto opened = OpenCurlLibrary("libz.so.1");
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(opened.status().message().find("has no function curl_global_init"), std::string::npos)
      << opened.status().message();
}

}  // namespace
}  // namespace perch::http
