// The HTTP front on a loopback port: what a handler that fails leaves of the server.
#include "http/server.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/test/unit_test.hpp>
#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>

#include "support/http_client.hpp"
#include "support/wait.hpp"

namespace asio = boost::asio;
namespace http = buzzer::http;
using namespace std::chrono_literals;

namespace {

// An http::server on 127.0.0.1 with one I/O thread, serving `routes`.
class served {
  public:
    explicit served(const http::router& routes) : front_(io_, {}, routes, {}) {
        auto bound = front_.listen("127.0.0.1:0");
        port_ = static_cast<unsigned short>(std::stoi(bound.substr(bound.rfind(':') + 1)));
        front_.start();
        thread_ = std::thread([this] { io_.run(); });
    }

    ~served() {
        front_.stop();
        front_.close_all();
        // With the acceptor and every connection closed, run() has nothing left and returns.
        thread_.join();
    }

    served(const served&) = delete;
    served& operator=(const served&) = delete;

    unsigned short port() const { return port_; }
    http::server& front() { return front_; }

  private:
    asio::io_context io_;
    http::server front_;
    unsigned short port_ = 0;
    std::thread thread_;
};

// The routes of these tests: /ok answers, the others fail in the ways their names say.
http::router failing_routes() {
    http::router r;
    r.add("GET", "/ok", [](http::request&) -> asio::awaitable<http::response> {
        http::response res;
        res.body = "ok";
        co_return res;
    });
    r.add("GET", "/stream-throws-42", [](http::request&) -> asio::awaitable<http::response> {
        http::response res;
        res.set("Content-Type", "text/event-stream");
        res.stream = [](http::body_writer& w) -> asio::awaitable<void> {
            co_await w.write("data: before\n\n");
            throw 42;
        };
        co_return res;
    });
    r.add("GET", "/stream-throws-std", [](http::request&) -> asio::awaitable<http::response> {
        http::response res;
        res.stream = [](http::body_writer& w) -> asio::awaitable<void> {
            co_await w.write("data: before\n\n");
            throw std::runtime_error("the stream failed");
        };
        co_return res;
    });
    r.add("GET", "/events", [](http::request&) -> asio::awaitable<http::response> {
        http::response res;
        res.set("Content-Type", "text/event-stream");
        res.set("Cache-Control", "no-store");
        res.stream = [](http::body_writer& w) -> asio::awaitable<void> {
            co_await w.write("data: 1\n\n");
        };
        co_return res;
    });
    r.add("POST", "/echo", [](http::request& req) -> asio::awaitable<http::response> {
        http::response res;
        res.body = req.body;
        co_return res;
    });
    r.add("GET", "/handler-throws-42", [](http::request&) -> asio::awaitable<http::response> {
        throw 42;
        co_return http::response{};
    });
    return r;
}

// Everything the server sends for a GET of `target` until it closes the connection.
std::string exchange(unsigned short port, const std::string& target) {
    return buzzer::test::raw_exchange(
        port, "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 10s);
}

// What `c` receives until `done(received)` holds (5 s at most).
template <class Done>
std::string receive_until(buzzer::test::raw_connection& c, Done done) {
    std::string got;
    BOOST_TEST(buzzer::test::wait_until(
        [&] {
            got += c.receive(100ms);
            return done(got);
        },
        5s));
    return got;
}

// What `c` receives up to the end of a response head.
std::string receive_head(buzzer::test::raw_connection& c) {
    return receive_until(
        c, [](const std::string& got) { return got.find("\r\n\r\n") != std::string::npos; });
}

}  // namespace

BOOST_AUTO_TEST_SUITE(failing_handlers)

BOOST_AUTO_TEST_CASE(a_stream_body_that_throws_a_non_std_exception_ends_only_its_connection) {
    auto routes = failing_routes();
    served s(routes);
    buzzer::test::http_client kept(s.port());
    BOOST_TEST_REQUIRE(kept.get("/ok").status == 200);
    for (const std::string target : {"/stream-throws-42", "/stream-throws-std"}) {
        BOOST_TEST_CONTEXT(target) {
            for (int i = 0; i < 3; ++i) {
                auto got = exchange(s.port(), target);
                BOOST_TEST(got.starts_with("HTTP/1.1 200 OK\r\n"), got);
                BOOST_TEST(got.find("data: before") != std::string::npos, got);
                // The body ended with its connection, not with a last chunk.
                BOOST_TEST(got.find("\r\n0\r\n\r\n") == std::string::npos, got);
            }
        }
    }
    // The connection opened before is still served, and new ones are too.
    BOOST_TEST(kept.get("/ok").body == "ok");
    BOOST_TEST(kept.connections_opened() == 1u);
    buzzer::test::http_client fresh(s.port());
    BOOST_TEST(fresh.get("/ok").status == 200);
    kept.close();
    fresh.close();
    BOOST_TEST(buzzer::test::wait_until([&] { return s.front().connections() == 0; }, 5s),
               "connections left open: " << s.front().connections());
    BOOST_TEST(s.front().stats().streams.load() == 0);
}

BOOST_AUTO_TEST_CASE(a_handler_that_throws_a_non_std_exception_gets_a_500) {
    auto routes = failing_routes();
    served s(routes);
    buzzer::test::http_client c(s.port());
    auto r = c.get("/handler-throws-42");
    BOOST_TEST(r.status == 500);
    BOOST_TEST(r.header("Content-Type") == "application/problem+json");
    BOOST_TEST(r.body.find("/problems/internal-error") != std::string::npos, r.body);
    BOOST_TEST(c.get("/ok").status == 200);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(heads_on_the_wire)

BOOST_AUTO_TEST_CASE(a_stream_has_its_fields_then_connection_close_and_chunked) {
    auto routes = failing_routes();
    served s(routes);
    auto got = exchange(s.port(), "/events");
    BOOST_TEST(got ==
               "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n"
               "Connection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
               "9\r\ndata: 1\n\n\r\n0\r\n\r\n");
}

BOOST_AUTO_TEST_CASE(a_head_request_of_a_stream_gets_its_head_and_the_connection_stays) {
    auto routes = failing_routes();
    served s(routes);
    auto c = buzzer::test::raw_connect(s.port());
    BOOST_TEST_REQUIRE(!c.send("HEAD /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
    std::string got = receive_head(c);
    BOOST_TEST(got ==
               "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n"
               "Transfer-Encoding: chunked\r\n\r\n");
    BOOST_TEST(!c.closed());
}

BOOST_AUTO_TEST_CASE(expect_100_continue_gets_the_interim_head_before_the_body_is_sent) {
    auto routes = failing_routes();
    served s(routes);
    auto c = buzzer::test::raw_connect(s.port());
    BOOST_TEST_REQUIRE(
        !c.send("POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n"
                "Content-Length: 5\r\n\r\n"));
    std::string got = receive_head(c);
    BOOST_TEST(got == "HTTP/1.1 100 Continue\r\n\r\n");
    BOOST_TEST_REQUIRE(!c.send("hello"));
    got = receive_until(c, [](const std::string& text) { return text.ends_with("hello"); });
    BOOST_TEST(got == "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(http_error_type)

BOOST_AUTO_TEST_CASE(is_a_std_exception_whose_what_is_the_detail) {
    const http::http_error e{404, "not-found", "no operation with id X"};
    const std::exception& base = e;
    BOOST_TEST(std::string(base.what()) == "no operation with id X");
    BOOST_TEST(e.status == 404);
    BOOST_TEST(e.type == "not-found");
    BOOST_TEST(e.headers.empty());
}

BOOST_AUTO_TEST_SUITE_END()
