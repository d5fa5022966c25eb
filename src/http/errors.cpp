#include "http/errors.h"

#include <nlohmann/json.hpp>

namespace perch::http {

int HttpStatusFor(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return 200;
    case StatusCode::kInvalidArgument:
      return 400;
    case StatusCode::kUnauthenticated:
      return 401;
    case StatusCode::kPermissionDenied:
      return 403;
    case StatusCode::kNotFound:
      return 404;
    case StatusCode::kAlreadyExists:
      return 409;
    case StatusCode::kResourceExhausted:
      return 429;
    case StatusCode::kCancelled:
    case StatusCode::kUnavailable:
      return 503;
    case StatusCode::kDeadlineExceeded:
      return 504;
    case StatusCode::kInternal:
      return 500;
    case StatusCode::kBadGateway:
      return 502;
  }
  return 500;
}

StatusCode StatusCodeForHttp(int http_status) {
  switch (http_status) {
    case 401:
      return StatusCode::kUnauthenticated;
    case 403:
      return StatusCode::kPermissionDenied;
    case 404:
      return StatusCode::kNotFound;
    case 409:
      return StatusCode::kAlreadyExists;
    case 413:
    case 429:
      return StatusCode::kResourceExhausted;
    case 504:
      return StatusCode::kDeadlineExceeded;
    default:
      return http_status >= 500 ? StatusCode::kUnavailable : StatusCode::kInvalidArgument;
  }
}

std::string ErrorJson(const Status& status) {
  // `replace`: a message quoting user input may hold invalid UTF-8.
  return nlohmann::json{{"error", status.message()}, {"code", ToString(status.code())}}.dump(
      -1, ' ', false, nlohmann::json::error_handler_t::replace);
}

void SetError(Response& response, const Status& status) {
  SetJson(response, HttpStatusFor(status.code()), ErrorJson(status));
  // 503 is for what passes (loading, no room in --memory-limit, no healthy
  // peer): say when to come back rather than leave clients to hammer.
  if (response.status == 503) {
    response.headers.Set("Retry-After", "1");
  }
}

void SetJson(Response& response, int http_status, std::string body) {
  response.status = http_status;
  response.SetBody(std::move(body), "application/json");
}

}  // namespace perch::http
