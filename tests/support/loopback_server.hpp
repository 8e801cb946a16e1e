// A TCP server for tests on 127.0.0.1 with an I/O thread of its own.
#pragma once

#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <functional>
#include <string>
#include <string_view>
#include <thread>

namespace buzzer::test {

// Listens on an ephemeral loopback port and runs `serve` as a coroutine for every accepted
// connection. The destructor stops the thread: declare it after what `serve` uses.
class loopback_server {
  public:
    using handler = std::function<boost::asio::awaitable<void>(boost::asio::ip::tcp::socket)>;

    explicit loopback_server(handler serve);
    ~loopback_server();
    loopback_server(const loopback_server&) = delete;
    loopback_server& operator=(const loopback_server&) = delete;

    // The bound port.
    [[nodiscard]] unsigned short port() const noexcept { return port_; }
    // "http://127.0.0.1:PORT" followed by `target`.
    [[nodiscard]] std::string url(std::string_view target) const;
    // Connections accepted so far.
    [[nodiscard]] int accepted() const noexcept { return accepted_.load(); }

  private:
    boost::asio::awaitable<void> accept_loop();

    handler serve_;
    boost::asio::io_context io_;
    boost::asio::ip::tcp::acceptor acceptor_{io_};
    unsigned short port_ = 0;
    std::atomic<int> accepted_{0};
    std::thread thread_;
};

}  // namespace buzzer::test
