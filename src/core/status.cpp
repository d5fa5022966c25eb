#include "core/status.h"

#include "core/enum_names.h"

namespace perch {
namespace {

constexpr EnumNames<StatusCode, 12> kNames{{
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
    {StatusCode::kBadGateway, "BadGateway"},
}};

}  // namespace

std::string_view ToString(StatusCode code) { return EnumToString(kNames, code); }

std::optional<StatusCode> StatusCodeFromString(std::string_view name) {
  return EnumFromString(kNames, name);
}

std::string Status::ToString() const {
  if (ok()) {
    return "Ok";
  }
  return std::string(perch::ToString(code_)) + ": " + message_;
}

}  // namespace perch
