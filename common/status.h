// Status and Result<T>: errors as values that carry their context (file, row, rank, step...).
//
// Note [error context]: every error names what it was about. Callers add context as the error
// travels up with `WithContext("reading " + path)`, so the final message reads like
// "reading data.h5: /labels: expected int32, found float64".
#pragma once

#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

namespace effnet {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,  // bad config value, bad CLI flag, malformed input
  kNotFound,         // missing file, key, column
  kDataLoss,         // truncated or corrupt file
  kFailedPrecondition,
  kDeadlineExceeded,   // a blocking call ran past its deadline
  kUnavailable,        // a peer (rank, coordinator) is gone
  kPermissionDenied,   // wrong token, stale generation
  kAlreadyExists,      // a second claim on something unique (a rank)
  kAborted,            // the operation's context is gone (the job failed; a new launch must start)
  kUnauthenticated,    // no or wrong credentials
  kResourceExhausted,  // a size or rate limit
  kCancelled,          // the caller or a shutdown cancelled the operation
  kInternal,
};

const char* StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}
  static Status Ok() { return {}; }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "InvalidArgument: <message>"
  std::string ToString() const;
  // Prefix the message with context: "<context>: <message>". No-op on OK.
  Status WithContext(const std::string& context) const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status InvalidArgument(std::string m) {
  return {StatusCode::kInvalidArgument, std::move(m)};
}
inline Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
inline Status DataLoss(std::string m) { return {StatusCode::kDataLoss, std::move(m)}; }
inline Status FailedPrecondition(std::string m) {
  return {StatusCode::kFailedPrecondition, std::move(m)};
}
inline Status DeadlineExceeded(std::string m) {
  return {StatusCode::kDeadlineExceeded, std::move(m)};
}
inline Status Unavailable(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
inline Status PermissionDenied(std::string m) {
  return {StatusCode::kPermissionDenied, std::move(m)};
}
inline Status AlreadyExists(std::string m) { return {StatusCode::kAlreadyExists, std::move(m)}; }
inline Status Aborted(std::string m) { return {StatusCode::kAborted, std::move(m)}; }
inline Status Unauthenticated(std::string m) {
  return {StatusCode::kUnauthenticated, std::move(m)};
}
inline Status ResourceExhausted(std::string m) {
  return {StatusCode::kResourceExhausted, std::move(m)};
}
inline Status Cancelled(std::string m) { return {StatusCode::kCancelled, std::move(m)}; }
inline Status Internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }

// Thrown where an API cannot return a Status (constructors, torch callbacks); main()s catch it.
class StatusError : public std::runtime_error {
 public:
  explicit StatusError(Status s) : std::runtime_error(s.ToString()), status_(std::move(s)) {}
  const Status& status() const { return status_; }

 private:
  Status status_;
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}         // NOLINT(google-explicit-constructor)
  Result(Status status) : status_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    if (status_.ok()) status_ = Internal("Result constructed from an OK status without a value");
  }
  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }
  T& value() & { return Check(), *value_; }
  const T& value() const& { return Check(), *value_; }
  T&& value() && { return Check(), std::move(*value_); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  // Throws StatusError when not ok; for call sites that end in main()'s catch.
  T ValueOrThrow() && {
    Check();
    return std::move(*value_);
  }

 private:
  void Check() const {
    if (!value_) throw StatusError(status_);
  }
  std::optional<T> value_;
  Status status_;
};

// Throws StatusError when `s` is not OK.
inline void ThrowIfError(const Status& s) {
  if (!s.ok()) throw StatusError(s);
}

}  // namespace effnet

#define EFFNET_RETURN_IF_ERROR(expr) \
  do {                               \
    ::effnet::Status _st = (expr);   \
    if (!_st.ok()) return _st;       \
  } while (0)

#define EFFNET_CONCAT_INNER(a, b) a##b
#define EFFNET_CONCAT(a, b) EFFNET_CONCAT_INNER(a, b)
#define EFFNET_ASSIGN_OR_RETURN(lhs, expr)                                                  \
  auto EFFNET_CONCAT(_res_, __LINE__) = (expr);                                             \
  if (!EFFNET_CONCAT(_res_, __LINE__).ok()) return EFFNET_CONCAT(_res_, __LINE__).status(); \
  lhs = std::move(EFFNET_CONCAT(_res_, __LINE__)).value()
