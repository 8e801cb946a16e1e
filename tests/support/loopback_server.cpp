#include "support/loopback_server.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace buzzer::test {
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

loopback_server::loopback_server(handler serve) : serve_(std::move(serve)) {
    tcp::endpoint at(asio::ip::address_v4::loopback(), 0);
    acceptor_.open(at.protocol());
    acceptor_.bind(at);
    acceptor_.listen();
    port_ = acceptor_.local_endpoint().port();
    asio::co_spawn(io_, accept_loop(), [](const std::exception_ptr&) {});
    thread_ = std::thread([this] { io_.run(); });
}

loopback_server::~loopback_server() {
    io_.stop();
    thread_.join();
}

std::string loopback_server::url(std::string_view target) const {
    return "http://127.0.0.1:" + std::to_string(port_) + std::string(target);
}

asio::awaitable<void> loopback_server::accept_loop() {
    for (;;) {
        auto [ec, socket] = co_await acceptor_.async_accept(asio::as_tuple(asio::use_awaitable));
        if (ec) co_return;
        ++accepted_;
        asio::co_spawn(io_, serve_(std::move(socket)), [](const std::exception_ptr&) {});
    }
}

}  // namespace buzzer::test
