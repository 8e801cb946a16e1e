// Runs a coroutine to completion on a fresh io_context; its exception becomes the caller's.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <thread>
#include <vector>

namespace buzzer::test {

/// `run_coroutine([&]() -> asio::awaitable<void> { ... })` with `threads` I/O threads.
template <class F>
auto run_coroutine(F&& make, unsigned threads = 1) {
    boost::asio::io_context io(static_cast<int>(threads));
    auto future = boost::asio::co_spawn(io, make(), boost::asio::use_future);
    std::vector<std::thread> pool;
    for (unsigned i = 1; i < threads; ++i) pool.emplace_back([&io] { io.run(); });
    io.run();
    for (auto& t : pool) t.join();
    return future.get();
}

}  // namespace buzzer::test
