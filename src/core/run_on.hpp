// Runs a function on another executor (usually a strand that owns some state) and resumes the
// awaiting coroutine on its own executor with the function's result.
#pragma once

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <type_traits>
#include <utility>

namespace buzzer::core {

/// `co_await run_on(strand, [&] { return state.size(); })`.
template <class Executor, class F>
auto run_on(Executor ex, F f) -> boost::asio::awaitable<std::invoke_result_t<F&>> {
    namespace asio = boost::asio;
    using result = std::invoke_result_t<F&>;
    if constexpr (std::is_void_v<result>) {
        return asio::async_initiate<decltype(asio::use_awaitable), void()>(
            [ex, f = std::move(f)](auto handler) mutable {
                asio::post(ex, [f = std::move(f), h = std::move(handler)]() mutable {
                    f();
                    auto home = asio::get_associated_executor(h);
                    asio::post(home, std::move(h));
                });
            },
            asio::use_awaitable);
    } else {
        return asio::async_initiate<decltype(asio::use_awaitable), void(result)>(
            [ex, f = std::move(f)](auto handler) mutable {
                asio::post(ex, [f = std::move(f), h = std::move(handler)]() mutable {
                    auto home = asio::get_associated_executor(h);
                    asio::post(home, [h = std::move(h), r = f()]() mutable {
                        std::move(h)(std::move(r));
                    });
                });
            },
            asio::use_awaitable);
    }
}

}  // namespace buzzer::core
