// common/async.h — small coroutine helpers shared by the network modules
// (Boost 1.74 has neither channels nor any_completion_handler).
//
// PendingCompletion<Args...> holds a coroutine's completion handler, with
// outstanding work on its executor so the io_context does not run dry while
// it waits; complete() posts the handler to that executor. It is completed
// at most once, from any thread; destroying it uncompleted abandons the wait.
//
// run_blocking(pool, f) runs f() on the worker pool and resumes the awaiting
// coroutine on its own executor with the result: the way blocking calls
// (queue writes with fsync, DNS, GMime) stay off the I/O threads. An
// exception from f() is rethrown in the coroutine.
//
// Latch: wait() resumes once count_down() has been called `count` times.
//
// GCC 12 bug: a lambda with captures written inside a co_await expression
// (co_await run_blocking(pool, [id] {...})) has its captures destroyed twice
// (double free). Name the lambda first, then co_await f(std::move(job)).
// Every coroutine in gateway/delivery follows that rule.
#pragma once

#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <type_traits>
#include <utility>

#include "common/asio.h"

namespace postvault {

template <typename... Args>
class PendingCompletion {
public:
    virtual ~PendingCompletion() = default;
    virtual void complete(Args... args) = 0;
};

template <typename Handler, typename... Args>
class PendingCompletionFor final : public PendingCompletion<Args...> {
public:
    explicit PendingCompletionFor(Handler handler)
        : work_(asio::prefer(asio::get_associated_executor(handler), asio::execution::outstanding_work.tracked)),
          handler_(std::move(handler)) {}

    void complete(Args... args) override {
        asio::post(work_, [handler = std::move(handler_), ... values = std::move(args)]() mutable {
            std::move(handler)(std::move(values)...);
        });
    }

private:
    using Executor = std::decay_t<decltype(asio::prefer(
        asio::get_associated_executor(std::declval<Handler&>()), asio::execution::outstanding_work.tracked))>;
    Executor work_;
    Handler handler_;
};

template <typename... Args, typename Handler>
std::unique_ptr<PendingCompletion<Args...>> make_pending_completion(Handler handler) {
    return std::make_unique<PendingCompletionFor<Handler, Args...>>(std::move(handler));
}

template <typename Function>
auto run_blocking(asio::thread_pool& pool, Function function)
    -> asio::awaitable<std::invoke_result_t<Function&>> {
    using Value = std::invoke_result_t<Function&>;
    auto initiation = [&pool](auto handler, Function work) {
        auto pending = make_pending_completion<std::exception_ptr, std::optional<Value>>(std::move(handler));
        asio::post(pool, [pending = std::move(pending), work = std::move(work)]() mutable {
            std::optional<Value> value;
            std::exception_ptr failure;
            try {
                value.emplace(work());
            } catch (...) {
                failure = std::current_exception();
            }
            pending->complete(failure, std::move(value));
        });
    };
    auto result = co_await asio::async_initiate<decltype(asio::use_awaitable),
                                                void(std::exception_ptr, std::optional<Value>)>(
        initiation, asio::use_awaitable, std::move(function));
    co_return std::move(*result);
}

class Latch : public std::enable_shared_from_this<Latch> {
public:
    explicit Latch(std::size_t count) : count_(count) {}

    void count_down() {
        std::unique_ptr<PendingCompletion<>> ready;
        {
            std::lock_guard lock(mutex_);
            if (count_ > 0 && --count_ == 0) ready = std::move(waiter_);
        }
        if (ready) ready->complete();
    }

    asio::awaitable<void> wait() {
        auto initiation = [this](auto handler) {
            auto pending = make_pending_completion<>(std::move(handler));
            std::unique_lock lock(mutex_);
            if (count_ == 0) {
                lock.unlock();
                pending->complete();
                return;
            }
            waiter_ = std::move(pending);
        };
        co_await asio::async_initiate<decltype(asio::use_awaitable), void()>(initiation, asio::use_awaitable);
    }

private:
    std::mutex mutex_;
    std::size_t count_;
    std::unique_ptr<PendingCompletion<>> waiter_;
};

}  // namespace postvault
