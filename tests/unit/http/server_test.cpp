// The HTTP front on a loopback port: what a handler that fails leaves of the server.
#include "http/server.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/test/unit_test.hpp>
#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>

#include "support/http_client.hpp"
#include "support/tls_client.hpp"
#include "support/wait.hpp"

namespace asio = boost::asio;
namespace http = buzzer::http;
using namespace std::chrono_literals;

namespace {

// An http::server on 127.0.0.1 with one I/O thread, serving `routes`; over TLS with `tls`.
class served {
  public:
    explicit served(const http::router& routes,
                    const buzzer::test::certificate_files* tls = nullptr)
        : front_(io_, {}, routes, {}) {
        if (tls) front_.use_tls(tls->cert, tls->key);
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

namespace {

// The routes of the hook tests: /ok answers, /stream streams, /throws fails.
http::router hooked_routes(int& route_calls) {
    http::router r;
    r.add("GET", "/ok", [&route_calls](http::request&) -> asio::awaitable<http::response> {
        ++route_calls;
        http::response res;
        res.body = "ok";
        co_return res;
    });
    r.add("GET", "/stream", [](http::request&) -> asio::awaitable<http::response> {
        http::response res;
        res.set("Content-Type", "text/event-stream");
        res.stream = [](http::body_writer& w) -> asio::awaitable<void> {
            co_await w.write("data: 1\n\n");
        };
        co_return res;
    });
    r.add("GET", "/throws", [](http::request&) -> asio::awaitable<http::response> {
        throw std::runtime_error("the handler failed");
        co_return http::response{};
    });
    return r;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(router_hooks)

BOOST_AUTO_TEST_CASE(the_after_hook_sees_every_response_the_dispatch_produces) {
    int calls = 0;
    auto routes = hooked_routes(calls);
    routes.after([](const http::request& req, http::response& res) {
        res.set("X-After", req.method + " " + req.path + " " + std::to_string(res.status));
    });
    served s(routes);
    buzzer::test::http_client c(s.port());
    auto r = c.get("/ok");
    BOOST_TEST(r.status == 200);
    BOOST_TEST(r.header("X-After") == "GET /ok 200");
    BOOST_TEST(c.get("/nowhere").header("X-After") == "GET /nowhere 404");
    BOOST_TEST(c.request("PUT", "/ok").header("X-After") == "PUT /ok 405");
    r = c.get("/throws");
    BOOST_TEST(r.status == 500);
    BOOST_TEST(r.header("X-After") == "GET /throws 500");
    // A stream's head carries it too.
    auto got = exchange(s.port(), "/stream");
    BOOST_TEST(got.find("\r\nX-After: GET /stream 200\r\n") != std::string::npos, got);
    BOOST_TEST(got.find("data: 1") != std::string::npos, got);
}

BOOST_AUTO_TEST_CASE(the_before_hook_answers_a_request_before_its_route) {
    int calls = 0;
    auto routes = hooked_routes(calls);
    std::string seen;
    routes.before([&seen](http::request& req) -> std::optional<http::response> {
        seen = req.method + " " + req.path + " from " + req.remote + " body " + req.body;
        if (req.has_header("X-Refuse")) {
            http::response res;
            res.status = 429;
            res.body = "refused";
            return res;
        }
        if (req.has_header("X-Unauthorized"))
            throw http::http_error{401, "unauthorized", "no credential"};
        return std::nullopt;
    });
    routes.after([](const http::request&, http::response& res) {
        res.set("X-After", std::to_string(res.status));
    });
    served s(routes);
    buzzer::test::http_client c(s.port());
    BOOST_TEST(c.get("/ok").body == "ok");
    BOOST_TEST(calls == 1);
    BOOST_TEST(seen == "GET /ok from 127.0.0.1 body ");
    auto r = c.get("/ok", {{"X-Refuse", "1"}});
    BOOST_TEST(r.status == 429);
    BOOST_TEST(r.body == "refused");
    BOOST_TEST(r.header("X-After") == "429");
    BOOST_TEST(calls == 1);
    // Also before a lookup that would fail, and after the whole body is read.
    r = c.request("POST", "/nowhere", "the body", {{"X-Refuse", "1"}});
    BOOST_TEST(r.status == 429);
    BOOST_TEST(seen == "POST /nowhere from 127.0.0.1 body the body");
    // A hook that throws a problem answers with it.
    r = c.get("/ok", {{"X-Unauthorized", "1"}});
    BOOST_TEST(r.status == 401);
    BOOST_TEST(r.body.find("/problems/unauthorized") != std::string::npos, r.body);
    BOOST_TEST(r.header("X-After") == "401");
    BOOST_TEST(calls == 1);
    BOOST_TEST(c.get("/ok").status == 200);
    BOOST_TEST(c.connections_opened() == 1u);
}

BOOST_AUTO_TEST_CASE(an_after_hook_that_throws_leaves_a_500) {
    int calls = 0;
    auto routes = hooked_routes(calls);
    routes.after([](const http::request& req, http::response&) {
        if (req.path == "/ok") throw std::runtime_error("the hook failed");
    });
    served s(routes);
    buzzer::test::http_client c(s.port());
    auto r = c.get("/ok");
    BOOST_TEST(r.status == 500);
    BOOST_TEST(r.body.find("/problems/internal-error") != std::string::npos, r.body);
    BOOST_TEST(c.get("/nowhere").status == 404);
}

BOOST_AUTO_TEST_SUITE_END()

namespace {

// Certificates for the TLS cases, made once.
struct server_certificates {
    buzzer::test::temp_dir dir{"buzzer-tls-server-"};
    buzzer::test::certificate_files first =
        buzzer::test::make_self_signed(dir, "first", "first", 1001);
    buzzer::test::certificate_files second =
        buzzer::test::make_self_signed(dir, "second", "second", 2002);
};

const server_certificates& server_certs() {
    static const server_certificates c;
    return c;
}

buzzer::test::tls_client_options trusting(const std::filesystem::path& ca) {
    buzzer::test::tls_client_options o;
    o.ca_file = ca.string();
    return o;
}

// Sends a GET of `target` over `c` and returns the response up to its body's end.
std::string tls_get(buzzer::test::tls_client& c, const std::string& target) {
    c.send("GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    return c.receive_until(
        [](const std::string& got) {
            auto end = got.find("\r\n\r\n");
            if (end == std::string::npos) return false;
            auto at = got.find("Content-Length: ");
            if (at == std::string::npos || at > end) return true;
            return got.size() >= end + 4 + std::stoul(got.substr(at + 16));
        },
        5s);
}

// Routes that tell who asks, and a long poll that ends early when its client goes.
http::router tls_routes() {
    http::router r;
    r.add("GET", "/whoami", [](http::request& req) -> asio::awaitable<http::response> {
        http::response res;
        res.body = req.remote + (req.secure ? " tls" : " plain");
        co_return res;
    });
    r.add("GET", "/ok", [](http::request&) -> asio::awaitable<http::response> {
        http::response res;
        res.body = "ok";
        co_return res;
    });
    r.add("GET", "/events", [](http::request&) -> asio::awaitable<http::response> {
        http::response res;
        res.set("Content-Type", "text/event-stream");
        res.stream = [](http::body_writer& w) -> asio::awaitable<void> {
            co_await w.write("data: 1\n\n");
        };
        co_return res;
    });
    r.add("GET", "/poll", [](http::request& req) -> asio::awaitable<http::response> {
        auto timer = std::make_shared<asio::steady_timer>(co_await asio::this_coro::executor,
                                                          std::chrono::seconds(1));
        req.on_client_gone([timer] { timer->cancel(); });
        auto [ec] = co_await timer->async_wait(asio::as_tuple(asio::use_awaitable));
        http::response res;
        res.body = ec ? "gone" : "waited";
        co_return res;
    });
    return r;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(https)

BOOST_AUTO_TEST_CASE(handlers_see_the_client_address_and_whether_tls_carried_the_request) {
    auto routes = tls_routes();
    {
        served plain(routes);
        buzzer::test::http_client c(plain.port());
        BOOST_TEST(c.get("/whoami").body == "127.0.0.1 plain");
        BOOST_TEST(!plain.front().secure());
    }
    served s(routes, &server_certs().first);
    BOOST_TEST(s.front().secure());
    buzzer::test::tls_client c(s.port(), trusting(server_certs().first.cert));
    BOOST_TEST_REQUIRE(c.handshake() == "");
    auto got = tls_get(c, "/whoami");
    BOOST_TEST(got.starts_with("HTTP/1.1 200 OK\r\n"), got);
    BOOST_TEST(got.ends_with("\r\n\r\n127.0.0.1 tls"), got);
    // Kept alive.
    BOOST_TEST(tls_get(c, "/ok").ends_with("\r\n\r\nok"));
    BOOST_TEST(!c.closed());
}

BOOST_AUTO_TEST_CASE(an_event_stream_goes_over_tls_and_ends_with_close_notify) {
    auto routes = tls_routes();
    served s(routes, &server_certs().first);
    buzzer::test::tls_client c(s.port(), trusting(server_certs().first.cert));
    BOOST_TEST_REQUIRE(c.handshake() == "");
    c.send("GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    auto got = c.receive_until_close(5s);
    BOOST_TEST(got.ends_with("\r\n\r\n9\r\ndata: 1\n\n\r\n0\r\n\r\n"), got);
    BOOST_TEST(c.closed());
    BOOST_TEST(c.received_close_notify());
    BOOST_TEST(buzzer::test::wait_until([&] { return s.front().stats().streams.load() == 0; }, 5s));
}

BOOST_AUTO_TEST_CASE(a_long_poll_ends_when_its_tls_client_goes_and_not_for_a_request_sent_ahead) {
    auto routes = tls_routes();
    served s(routes, &server_certs().first);
    for (bool notify : {true, false}) {
        BOOST_TEST_CONTEXT("close_notify " << notify) {
            buzzer::test::tls_client c(s.port(), trusting(server_certs().first.cert));
            BOOST_TEST_REQUIRE(c.handshake() == "");
            const auto before = s.front().stats().responses_2xx.load();
            const auto requests = s.front().stats().requests.load();
            c.send("GET /poll HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
            // The request is read and waiting before the client goes.
            BOOST_TEST_REQUIRE(buzzer::test::wait_until(
                [&] { return s.front().stats().requests.load() > requests; }, 5s));
            const auto start = std::chrono::steady_clock::now();
            if (notify) c.shutdown();
            c.close();
            BOOST_TEST(buzzer::test::wait_until(
                [&] { return s.front().stats().responses_2xx.load() > before; }, 5s));
            BOOST_TEST((std::chrono::steady_clock::now() - start < 900ms));
        }
    }
    // A request sent ahead is not the client going: the poll waits its time, then both are
    // answered.
    buzzer::test::tls_client c(s.port(), trusting(server_certs().first.cert));
    BOOST_TEST_REQUIRE(c.handshake() == "");
    c.send(
        "GET /poll HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /ok HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    auto got = c.receive_until([](const std::string& g) { return g.ends_with("\r\n\r\nok"); }, 5s);
    BOOST_TEST(got.find("\r\n\r\nwaited") != std::string::npos, got);
    BOOST_TEST(got.ends_with("\r\n\r\nok"), got);
}

BOOST_AUTO_TEST_CASE(a_client_that_speaks_plain_http_is_closed_and_others_go_on) {
    auto routes = tls_routes();
    served s(routes, &server_certs().first);
    buzzer::test::tls_client kept(s.port(), trusting(server_certs().first.cert));
    BOOST_TEST_REQUIRE(kept.handshake() == "");
    BOOST_TEST(tls_get(kept, "/ok").ends_with("ok"));
    auto got = buzzer::test::raw_exchange(s.port(), "GET /ok HTTP/1.1\r\nHost: x\r\n\r\n", 5s);
    BOOST_TEST(got.find("HTTP/1.1") == std::string::npos, got);
    got = buzzer::test::raw_exchange(s.port(), std::string(4096, '\x16'), 5s);
    BOOST_TEST(got.find("HTTP/1.1") == std::string::npos, got);
    BOOST_TEST(s.front().stats().tls_handshakes_failed.load() == 2u);
    BOOST_TEST(tls_get(kept, "/ok").ends_with("ok"));
    BOOST_TEST(buzzer::test::wait_until([&] { return s.front().connections() == 1; }, 5s));
}

BOOST_AUTO_TEST_CASE(a_reload_serves_new_connections_with_the_new_certificate) {
    auto routes = tls_routes();
    served s(routes, &server_certs().first);
    buzzer::test::tls_client before(s.port(), trusting(server_certs().first.cert));
    BOOST_TEST_REQUIRE(before.handshake() == "");
    BOOST_TEST(before.peer_serial() == "1001");
    BOOST_TEST(tls_get(before, "/ok").ends_with("ok"));

    s.front().use_tls(server_certs().second.cert, server_certs().second.key);
    buzzer::test::tls_client after(s.port(), trusting(server_certs().second.cert));
    BOOST_TEST_REQUIRE(after.handshake() == "");
    BOOST_TEST(after.peer_serial() == "2002");
    BOOST_TEST(tls_get(after, "/ok").ends_with("ok"));
    // The connection made before goes on with its session.
    BOOST_TEST(tls_get(before, "/ok").ends_with("ok"));

    // A file that does not load: the certificate in use stays.
    const auto broken =
        server_certs().dir.write_file("broken.pem", "-----BEGIN CERTIFICATE-----\n");
    BOOST_CHECK_THROW(s.front().use_tls(broken, server_certs().second.key), std::runtime_error);
    buzzer::test::tls_client still(s.port(), trusting(server_certs().second.cert));
    BOOST_TEST_REQUIRE(still.handshake() == "");
    BOOST_TEST(still.peer_serial() == "2002");
}

BOOST_AUTO_TEST_SUITE_END()
