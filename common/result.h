// common/result.h — errors as values.
//
// Every module returns Result<T> (or Status for no value) instead of throwing.
// An Error carries a short machine code ("queue.disk_full"), a class
// (permanent or temporary: permanent maps to SMTP 5xx and HTTP 4xx, temporary
// to SMTP 4xx and HTTP 5xx/503) and a human message with context.
// Exceptions thrown by libraries are caught at module boundaries and turned
// into an Error there; they never cross a module's public header.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace postvault {

enum class ErrorClass { permanent, temporary };

struct Error {
    std::string code;      // stable identifier, "module.reason"
    ErrorClass error_class = ErrorClass::permanent;
    std::string message;   // for logs and replies; never contains secrets

    static Error permanent(std::string code, std::string message) {
        return Error{std::move(code), ErrorClass::permanent, std::move(message)};
    }
    static Error temporary(std::string code, std::string message) {
        return Error{std::move(code), ErrorClass::temporary, std::move(message)};
    }
    bool is_temporary() const { return error_class == ErrorClass::temporary; }
};

// A value or an Error. Small stand-in for std::expected (C++23).
template <typename T>
class [[nodiscard]] Result {
public:
    Result(T value) : state_(std::move(value)) {}
    Result(Error error) : state_(std::move(error)) {}

    bool ok() const { return state_.index() == 0; }
    explicit operator bool() const { return ok(); }

    T& value() & { return std::get<0>(state_); }
    const T& value() const& { return std::get<0>(state_); }
    T&& value() && { return std::get<0>(std::move(state_)); }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }

    const Error& error() const { return std::get<1>(state_); }

private:
    std::variant<T, Error> state_;
};

// Success or an Error, for operations with no value.
class [[nodiscard]] Status {
public:
    Status() = default;
    Status(Error error) : error_(std::move(error)) {}
    static Status success() { return Status(); }

    bool ok() const { return !error_.has_value(); }
    explicit operator bool() const { return ok(); }
    const Error& error() const { return *error_; }

private:
    std::optional<Error> error_;
};

}  // namespace postvault
