// How a store thread resumes a coroutine that waits for it: on the coroutine's own executor,
// kept busy (outstanding work) until then. Shared by the backends' executors.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>
#include <exception>
#include <functional>
#include <memory>
#include <stdexcept>
#include <type_traits>
#include <utility>

namespace buzzer::store {

/// How a store thread resumes a waiting coroutine; `resume` must run on `executor`.
struct completion {
    boost::asio::any_io_executor executor;
    std::function<void(std::exception_ptr)> resume;
    /// Posts `resume(e)` to the executor.
    void operator()(std::exception_ptr e) {
        boost::asio::post(executor, [fn = std::move(resume), e]() mutable { fn(e); });
    }
};

/// The executor a handler runs on, kept busy (outstanding work) until it has run.
template <class Handler>
boost::asio::any_io_executor tracked_executor(const Handler& handler) {
    return boost::asio::prefer(boost::asio::get_associated_executor(handler),
                               boost::asio::execution::outstanding_work.tracked);
}

/// Wraps an Asio completion handler so that a store thread can complete it on its executor.
template <class Handler>
completion completion_for(Handler&& handler) {
    auto ex = tracked_executor(handler);
    auto h = std::make_shared<std::decay_t<Handler>>(std::forward<Handler>(handler));
    return {ex, [h](std::exception_ptr e) { std::move (*h)(e); }};
}

/// What a request to a closed store completes with.
inline std::exception_ptr closed_error() {
    return std::make_exception_ptr(std::runtime_error("the store is closed"));
}

}  // namespace buzzer::store
