// Status and Result<T>: how every perch component reports errors across its
// boundary. A small closed set of codes; the detail lives in the message,
// written for the user who has to fix the problem.
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace perch {

enum class StatusCode {
  kOk,
  kInvalidArgument,
  kNotFound,
  kAlreadyExists,
  kUnavailable,
  kResourceExhausted,
  kDeadlineExceeded,
  kCancelled,
  kInternal,
  kUnauthenticated,
  kPermissionDenied,
  // An upstream server perch runs a request on (a process model) answered
  // something that is not a valid answer: HTTP 502.
  kBadGateway,
};

std::string_view ToString(StatusCode code);
std::optional<StatusCode> StatusCodeFromString(std::string_view name);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return {}; }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // "NotFound: model 'x' ..." for logs.
  std::string ToString() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status InvalidArgument(std::string message) {
  return {StatusCode::kInvalidArgument, std::move(message)};
}
inline Status NotFound(std::string message) { return {StatusCode::kNotFound, std::move(message)}; }
inline Status Unavailable(std::string message) {
  return {StatusCode::kUnavailable, std::move(message)};
}
inline Status ResourceExhausted(std::string message) {
  return {StatusCode::kResourceExhausted, std::move(message)};
}
inline Status Internal(std::string message) { return {StatusCode::kInternal, std::move(message)}; }
inline Status BadGateway(std::string message) {
  return {StatusCode::kBadGateway, std::move(message)};
}

// Either a value or a non-ok Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : state_(std::move(value)) {}        // NOLINT: implicit by design
  Result(Status status) : state_(std::move(status)) {  // NOLINT: implicit by design
    assert(!std::get<Status>(state_).ok() && "a Result holding a Status must hold an error");
  }

  bool ok() const { return std::holds_alternative<T>(state_); }
  const Status& status() const {
    static const Status kOkStatus;
    return ok() ? kOkStatus : std::get<Status>(state_);
  }

  T& value() & { return std::get<T>(state_); }
  const T& value() const& { return std::get<T>(state_); }
  // By value, so that `for (auto& x : F().value())` cannot dangle.
  T value() && { return std::get<T>(std::move(state_)); }

  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<T, Status> state_;
};

}  // namespace perch

// Returns the Status of `expr` from the enclosing function when it is not ok.
#define PERCH_RETURN_IF_ERROR(expr)         \
  do {                                      \
    ::perch::Status perch_status_ = (expr); \
    if (!perch_status_.ok()) {              \
      return perch_status_;                 \
    }                                       \
  } while (false)

#define PERCH_CONCAT_INNER(a, b) a##b
#define PERCH_CONCAT(a, b) PERCH_CONCAT_INNER(a, b)

// `PERCH_ASSIGN_OR_RETURN(auto x, MakeX());` unwraps a Result or returns its Status.
#define PERCH_ASSIGN_OR_RETURN(lhs, expr) \
  PERCH_ASSIGN_OR_RETURN_IMPL(PERCH_CONCAT(perch_result_, __LINE__), lhs, expr)
// NOLINTBEGIN(bugprone-macro-parentheses): lhs is a declaration.
#define PERCH_ASSIGN_OR_RETURN_IMPL(result, lhs, expr) \
  auto result = (expr);                                \
  if (!result.ok()) {                                  \
    return result.status();                            \
  }                                                    \
  lhs = std::move(result).value()
// NOLINTEND(bugprone-macro-parentheses)
