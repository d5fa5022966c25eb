#include "http/errors.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace perch::http {
namespace {

TEST(Errors, EveryCodeRoundTripsThroughHttp) {
  for (const StatusCode code :
       {StatusCode::kInvalidArgument, StatusCode::kNotFound, StatusCode::kAlreadyExists,
        StatusCode::kUnavailable, StatusCode::kResourceExhausted, StatusCode::kDeadlineExceeded,
        StatusCode::kUnauthenticated, StatusCode::kPermissionDenied}) {
    EXPECT_EQ(StatusCodeForHttp(HttpStatusFor(code)), code) << ToString(code);
  }
  EXPECT_EQ(HttpStatusFor(StatusCode::kAlreadyExists), 409);
  EXPECT_EQ(HttpStatusFor(StatusCode::kInternal), 500);
  EXPECT_EQ(StatusCodeForHttp(413), StatusCode::kResourceExhausted);
  EXPECT_EQ(StatusCodeForHttp(502), StatusCode::kUnavailable);
  EXPECT_EQ(StatusCodeForHttp(418), StatusCode::kInvalidArgument);
}

TEST(Errors, OneBodyShape) {
  Response response;
  SetError(response, Status(StatusCode::kResourceExhausted, "queue full \xff"));
  EXPECT_EQ(response.status, 429);
  EXPECT_EQ(response.headers.Value("content-type"), "application/json");
  const auto body = nlohmann::json::parse(response.body);
  EXPECT_EQ(body["code"], "ResourceExhausted");
  EXPECT_EQ(body["error"].get<std::string>().substr(0, 10), "queue full");
}

TEST(Errors, UnavailableSaysWhenToRetry) {
  Response response;
  SetError(response, Unavailable("no room in --memory-limit"));
  EXPECT_EQ(response.status, 503);
  EXPECT_EQ(response.headers.Value("Retry-After"), "1");
  Response refused;
  SetError(refused, NotFound("no such model"));
  EXPECT_FALSE(refused.headers.Has("Retry-After"));
}

TEST(Headers, CaseInsensitiveSetAddRemove) {
  Headers headers;
  headers.Add("Link", "a");
  headers.Add("link", "b");
  EXPECT_EQ(headers.Value("LINK"), "a");
  EXPECT_EQ(headers.fields().size(), 2u);
  headers.Set("LINK", "c");
  EXPECT_EQ(headers.fields().size(), 1u);
  EXPECT_EQ(headers.Value("link"), "c");
  headers.Remove("Link");
  EXPECT_FALSE(headers.Has("link"));
  EXPECT_EQ(headers.Value("link"), "");
}

}  // namespace
}  // namespace perch::http
