#include "core/status.h"

#include <array>

namespace perch {
namespace {

constexpr std::array<std::pair<StatusCode, std::string_view>, 11> kNames{{
    {StatusCode::kOk, "Ok"},
    {StatusCode::kInvalidArgument, "InvalidArgument"},
    {StatusCode::kNotFound, "NotFound"},
    {StatusCode::kAlreadyExists, "AlreadyExists"},
    {StatusCode::kUnavailable, "Unavailable"},
    {StatusCode::kResourceExhausted, "ResourceExhausted"},
    {StatusCode::kDeadlineExceeded, "DeadlineExceeded"},
    {StatusCode::kCancelled, "Cancelled"},
    {StatusCode::kInternal, "Internal"},
    {StatusCode::kUnauthenticated, "Unauthenticated"},
    {StatusCode::kPermissionDenied, "PermissionDenied"},
}};

}  // namespace

std::string_view ToString(StatusCode code) {
  for (const auto& [value, name] : kNames) {
    if (value == code) {
      return name;
    }
  }
  return "Unknown";
}

std::optional<StatusCode> StatusCodeFromString(std::string_view name) {
  for (const auto& [value, known] : kNames) {
    if (known == name) {
      return value;
    }
  }
  return std::nullopt;
}

std::string Status::ToString() const {
  if (ok()) {
    return "Ok";
  }
  return std::string(perch::ToString(code_)) + ": " + message_;
}

}  // namespace perch
