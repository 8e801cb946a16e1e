// The http executor against a local upstream: results, error answers, broken connections,
// cancellation and the keep-alive pool.
#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <boost/test/unit_test.hpp>
#include <chrono>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "jobs/executors.hpp"
#include "support/fake_job.hpp"
#include "support/loopback_server.hpp"
#include "support/run_coroutine.hpp"
#include "support/wait.hpp"

using namespace buzzer;
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
namespace json = boost::json;
using tcp = asio::ip::tcp;
using namespace asio::experimental::awaitable_operators;
using namespace std::chrono_literals;

namespace {

constexpr auto tuple_awaitable = asio::as_tuple(asio::use_awaitable);
constexpr const char* echo_type = "application/vnd.buzzer-test+json";

using test::fake_job;

// A request as the upstream saw it.
struct seen_request {
    std::string method, target, host, operation_id, attempt, content_type, team, body;
};

// The upstream: a Beast server on 127.0.0.1 with its own thread and io_context. Routes:
//   /echo, /close-idle, /drop-second, /close, /slow   200, the request body, echo_type
//   /unavailable 503   /missing 404   /moved 302   /big /big-chunked 1000 bytes
//   /untyped 200 without Content-Type   /hang never answers   /truncated 10 of 100 bytes
//   /drop closes without answering
// /close-idle closes the connection after answering (without saying so); /drop-second
// closes a connection on its second request without answering; /close says Connection: close.
class upstream_server {
  public:
    upstream_server() = default;
    upstream_server(const upstream_server&) = delete;
    upstream_server& operator=(const upstream_server&) = delete;

    std::string url(const std::string& target) const { return listener_.url(target); }
    unsigned short port() const { return listener_.port(); }
    int accepted() const { return listener_.accepted(); }

    std::vector<seen_request> seen() const {
        std::lock_guard lock(mutex_);
        return seen_;
    }

    std::atomic<int> requests{0};          ///< requests read
    std::atomic<int> closed_by_client{0};  ///< /hang connections the client closed
    std::atomic<int> closed_idle{0};       ///< /close-idle connections closed after answering

  private:
    void record(const bhttp::request<bhttp::string_body>& req) {
        std::lock_guard lock(mutex_);
        seen_.push_back(
            {std::string(req.method_string()), std::string(req.target()),
             std::string(req[bhttp::field::host]), std::string(req["X-Buzzer-Operation-Id"]),
             std::string(req["X-Buzzer-Attempt"]), std::string(req[bhttp::field::content_type]),
             std::string(req["X-Team"]), req.body()});
    }

    asio::awaitable<void> serve(tcp::socket sock) {
        beast::flat_buffer buffer;
        for (int served = 1;; ++served) {
            bhttp::request<bhttp::string_body> req;
            auto r = co_await bhttp::async_read(sock, buffer, req, tuple_awaitable);
            if (std::get<0>(r)) co_return;
            record(req);
            ++requests;
            std::string path(req.target());
            path = path.substr(0, path.find('?'));

            if (path == "/hang") {
                // Never answer; note when the client gives up the connection.
                char byte = 0;
                co_await sock.async_read_some(asio::buffer(&byte, 1), tuple_awaitable);
                ++closed_by_client;
                co_return;
            }
            if (path == "/drop" || (path == "/drop-second" && served == 2)) co_return;
            if (path == "/truncated") {
                static const std::string raw =
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n"
                    "0123456789";
                co_await asio::async_write(sock, asio::buffer(raw), tuple_awaitable);
                co_return;
            }
            if (path == "/slow") {
                asio::steady_timer t(sock.get_executor(), 100ms);
                co_await t.async_wait(tuple_awaitable);
            }

            bhttp::response<bhttp::string_body> res(bhttp::status::ok, 11);
            res.keep_alive(req.keep_alive());
            if (path == "/unavailable") {
                res.result(bhttp::status::service_unavailable);
                res.set(bhttp::field::content_type, "text/plain");
                res.body() = "overloaded: " + std::string(300, 'x');
            } else if (path == "/missing") {
                res.result(bhttp::status::not_found);
                res.body() = "no such report\n";
            } else if (path == "/moved") {
                res.result(bhttp::status::found);
                res.set(bhttp::field::location, "http://elsewhere.example/report");
            } else if (path == "/big" || path == "/big-chunked") {
                res.set(bhttp::field::content_type, "text/plain");
                res.body() = std::string(1000, 'b');
            } else if (path == "/untyped") {
                res.body() = "raw bytes";
            } else {
                res.set(bhttp::field::content_type, echo_type);
                res.body() = req.body();
            }
            if (path == "/close") res.keep_alive(false);
            res.prepare_payload();
            if (path == "/big-chunked") res.chunked(true);
            auto w = co_await bhttp::async_write(sock, res, tuple_awaitable);
            if (std::get<0>(w)) co_return;
            if (path == "/close-idle") {
                boost::system::error_code ignored;
                sock.close(ignored);
                ++closed_idle;
                co_return;
            }
            if (!res.keep_alive()) co_return;
        }
    }

    mutable std::mutex mutex_;
    std::vector<seen_request> seen_;
    test::loopback_server listener_{[this](tcp::socket s) { return serve(std::move(s)); }};
};

// How one attempt ended.
struct attempt_result {
    bool succeeded = false;
    bool aborted = false;  ///< operation_aborted came out, as the scheduler expects
    bool retryable = false;
    std::string error;
    json::value value;
};

asio::awaitable<void> attempt(job_function fn, fake_job* j, attempt_result* out) {
    try {
        out->value = co_await fn(*j);
        out->succeeded = true;
    } catch (const job_error& e) {
        out->error = e.what();
        out->retryable = e.retryable();
    } catch (const boost::system::system_error& e) {
        out->aborted = e.code() == asio::error::operation_aborted;
        out->error = e.what();
    }
}

// Runs one attempt on a fresh io_context, as the scheduler's strand would.
attempt_result run(const job_function& fn, fake_job& j) {
    attempt_result r;
    test::run_coroutine([&] { return attempt(fn, &j, &r); });
    return r;
}

attempt_result run(const job_function& fn) {
    fake_job j(json::parse(R"({"n": 1})"));
    return run(fn, j);
}

// Runs `n` attempts at once on one io_context.
void run_parallel(const job_function& fn, int n) {
    asio::io_context io;
    std::vector<fake_job> fakes(static_cast<std::size_t>(n));
    std::vector<attempt_result> results(static_cast<std::size_t>(n));
    for (std::size_t i = 0; i < fakes.size(); ++i)
        asio::co_spawn(io, attempt(fn, &fakes[i], &results[i]), asio::detached);
    io.run();
    for (const auto& r : results) BOOST_TEST_REQUIRE(r.succeeded, r.error);
}

job_function make_job(const std::string& url) {
    jobs::http_spec spec;
    spec.url = url;
    return jobs::make_http_job(spec);
}

bool rejected(jobs::http_spec spec) {
    try {
        jobs::make_http_job(std::move(spec));
        return false;
    } catch (const std::invalid_argument&) {
        return true;
    }
}

}  // namespace

BOOST_AUTO_TEST_SUITE(http_call)

BOOST_AUTO_TEST_CASE(a_2xx_body_and_media_type_become_the_result) {
    upstream_server up;
    jobs::http_spec spec;
    spec.url = up.url("/echo?team=bi");
    spec.headers = {{"X-Team", "bi"}};
    auto fn = jobs::make_http_job(spec);
    fake_job j(json::parse(R"({"report": "q3", "rows": [1, 2]})"), 2);
    auto r = run(fn, j);
    BOOST_TEST_REQUIRE(r.succeeded, r.error);
    BOOST_TEST(r.value.is_null());
    BOOST_TEST(j.results == 1);
    BOOST_TEST(j.raw_body.value_or("") == json::serialize(j.input()));
    BOOST_TEST(j.raw_media_type == echo_type);
    BOOST_TEST(j.reports.empty());

    auto seen = up.seen();
    BOOST_TEST_REQUIRE(seen.size() == 1u);
    BOOST_TEST(seen[0].method == "POST");
    BOOST_TEST(seen[0].target == "/echo?team=bi");
    BOOST_TEST(seen[0].host == "127.0.0.1:" + std::to_string(up.port()));
    BOOST_TEST(seen[0].operation_id == "01JDB6Q6X8Z3M9J1V7QJ4T2N5K");
    BOOST_TEST(seen[0].attempt == "2");
    BOOST_TEST(seen[0].content_type == "application/json");
    BOOST_TEST(seen[0].team == "bi");
    BOOST_TEST(seen[0].body == json::serialize(j.input()));
}

BOOST_AUTO_TEST_CASE(the_configured_method_is_used_and_null_input_is_sent_as_null) {
    upstream_server up;
    jobs::http_spec spec;
    spec.url = up.url("/echo");
    spec.method = "PUT";
    fake_job j;
    auto r = run(jobs::make_http_job(spec), j);
    BOOST_TEST_REQUIRE(r.succeeded, r.error);
    auto seen = up.seen();
    BOOST_TEST_REQUIRE(seen.size() == 1u);
    BOOST_TEST(seen[0].method == "PUT");
    BOOST_TEST(seen[0].body == "null");
    BOOST_TEST(j.raw_body.value_or("") == "null");
}

BOOST_AUTO_TEST_CASE(a_host_name_is_resolved) {
    upstream_server up;
    fake_job j;
    auto r = run(make_job("http://localhost:" + std::to_string(up.port()) + "/echo"), j);
    BOOST_TEST_REQUIRE(r.succeeded, r.error);
    BOOST_TEST(j.raw_body.value_or("") == "null");
    auto seen = up.seen();
    BOOST_TEST_REQUIRE(seen.size() == 1u);
    BOOST_TEST(seen[0].host == "localhost:" + std::to_string(up.port()));
}

BOOST_AUTO_TEST_CASE(an_answer_without_content_type_is_octet_stream) {
    upstream_server up;
    fake_job j;
    auto r = run(make_job(up.url("/untyped")), j);
    BOOST_TEST_REQUIRE(r.succeeded, r.error);
    BOOST_TEST(j.raw_body.value_or("") == "raw bytes");
    BOOST_TEST(j.raw_media_type == "application/octet-stream");
}

BOOST_AUTO_TEST_CASE(a_5xx_fails_the_attempt_retryably_quoting_200_bytes) {
    upstream_server up;
    auto r = run(make_job(up.url("/unavailable")));
    BOOST_TEST(!r.succeeded);
    BOOST_TEST(r.retryable);
    BOOST_TEST(r.error == "upstream answered 503: overloaded: " + std::string(200 - 12, 'x'));
}

BOOST_AUTO_TEST_CASE(a_4xx_fails_the_operation) {
    upstream_server up;
    auto r = run(make_job(up.url("/missing")));
    BOOST_TEST(!r.succeeded);
    BOOST_TEST(!r.retryable);
    BOOST_TEST(r.error == "upstream answered 404: no such report");
}

BOOST_AUTO_TEST_CASE(a_redirect_is_not_followed) {
    upstream_server up;
    auto r = run(make_job(up.url("/moved")));
    BOOST_TEST(!r.succeeded);
    BOOST_TEST(!r.retryable);
    BOOST_TEST(r.error ==
               "upstream redirected (302) to http://elsewhere.example/report; "
               "redirects are not followed");
    BOOST_TEST(up.requests == 1);
}

BOOST_AUTO_TEST_CASE(a_connection_closed_mid_body_is_retryable) {
    upstream_server up;
    fake_job j;
    auto r = run(make_job(up.url("/truncated")), j);
    BOOST_TEST(!r.succeeded);
    BOOST_TEST(r.retryable);
    BOOST_TEST(r.error == "upstream closed the connection in the middle of its answer");
    BOOST_TEST(j.results == 0);
}

BOOST_AUTO_TEST_CASE(a_fresh_connection_closed_before_answering_is_retryable_and_not_retried) {
    upstream_server up;
    auto r = run(make_job(up.url("/drop")));
    BOOST_TEST(!r.succeeded);
    BOOST_TEST(r.retryable);
    BOOST_TEST(r.error == "upstream closed the connection before answering");
    BOOST_TEST(up.accepted() == 1);
}

BOOST_AUTO_TEST_CASE(a_refused_connection_is_retryable) {
    unsigned short port = 0;
    {
        asio::io_context io;
        tcp::acceptor a(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
        port = a.local_endpoint().port();
    }
    auto r = run(make_job("http://127.0.0.1:" + std::to_string(port) + "/x"));
    BOOST_TEST(!r.succeeded);
    BOOST_TEST(r.retryable);
    BOOST_TEST(r.error.find("cannot connect to upstream 127.0.0.1:" + std::to_string(port)) == 0u,
               r.error);
}

BOOST_AUTO_TEST_CASE(a_body_over_max_body_fails_the_attempt) {
    upstream_server up;
    for (const char* path : {"/big", "/big-chunked"}) {
        jobs::http_spec spec;
        spec.url = up.url(path);
        spec.max_body = 100;
        fake_job j;
        auto r = run(jobs::make_http_job(spec), j);
        BOOST_TEST(!r.succeeded, path);
        BOOST_TEST(r.retryable, path);
        BOOST_TEST(r.error == "upstream response body exceeds max_body (100 bytes)", path);
        BOOST_TEST(j.results == 0);
    }
    // Exactly at the limit is fine.
    jobs::http_spec spec;
    spec.url = up.url("/big");
    spec.max_body = 1000;
    BOOST_TEST(run(jobs::make_http_job(spec)).succeeded);
}

BOOST_AUTO_TEST_CASE(cancellation_aborts_a_hanging_exchange_and_closes_the_connection) {
    upstream_server up;
    auto fn = make_job(up.url("/hang"));
    for (int round = 1; round <= 2; ++round) {
        fake_job j;
        attempt_result r;
        std::size_t winner = 0;
        auto started = std::chrono::steady_clock::now();
        // Raced against a timer with the awaitable operators, as the scheduler does.
        test::run_coroutine([&]() -> asio::awaitable<void> {
            asio::steady_timer timer(co_await asio::this_coro::executor, 200ms);
            auto raced = co_await (attempt(fn, &j, &r) || timer.async_wait(asio::use_awaitable));
            winner = raced.index();
        });
        auto took = std::chrono::steady_clock::now() - started;
        BOOST_TEST(winner == 1u);
        BOOST_TEST(r.aborted, r.error);
        BOOST_TEST(took < 1500ms);
        // The connection is closed, not kept: the upstream sees it go, and the next attempt
        // needs a new one.
        BOOST_TEST(test::wait_until([&] { return up.closed_by_client == round; }, 2000ms));
        BOOST_TEST(up.accepted() == round);
    }
}

BOOST_AUTO_TEST_CASE(keep_alive_reuses_one_connection_across_attempts_and_copies) {
    upstream_server up;
    auto fn = make_job(up.url("/echo"));
    auto copy = fn;
    BOOST_TEST_REQUIRE(run(fn).succeeded);
    BOOST_TEST_REQUIRE(run(fn).succeeded);
    BOOST_TEST_REQUIRE(run(copy).succeeded);
    BOOST_TEST(up.requests == 3);
    BOOST_TEST(up.accepted() == 1);
}

BOOST_AUTO_TEST_CASE(connection_close_answers_are_not_pooled) {
    upstream_server up;
    auto fn = make_job(up.url("/close"));
    BOOST_TEST_REQUIRE(run(fn).succeeded);
    BOOST_TEST_REQUIRE(run(fn).succeeded);
    BOOST_TEST(up.accepted() == 2);
}

BOOST_AUTO_TEST_CASE(a_pooled_connection_closed_by_the_upstream_is_replaced) {
    upstream_server up;
    auto fn = make_job(up.url("/close-idle"));
    BOOST_TEST_REQUIRE(run(fn).succeeded);
    BOOST_TEST_REQUIRE(test::wait_until([&] { return up.closed_idle == 1; }, 2000ms));
    auto r = run(fn);
    BOOST_TEST_REQUIRE(r.succeeded, r.error);
    BOOST_TEST(up.accepted() == 2);
    BOOST_TEST(up.requests == 2);
}

BOOST_AUTO_TEST_CASE(a_pooled_connection_dropped_before_answering_is_retried_on_a_fresh_one) {
    upstream_server up;
    auto fn = make_job(up.url("/drop-second"));
    BOOST_TEST_REQUIRE(run(fn).succeeded);
    fake_job j(json::parse(R"({"n": 2})"));
    auto r = run(fn, j);
    BOOST_TEST_REQUIRE(r.succeeded, r.error);
    BOOST_TEST(j.raw_body.value_or("") == R"({"n":2})");
    BOOST_TEST(up.accepted() == 2);
    BOOST_TEST(up.requests == 3);
}

BOOST_AUTO_TEST_CASE(the_pool_keeps_at_most_16_idle_connections) {
    upstream_server up;
    auto fn = make_job(up.url("/slow"));
    run_parallel(fn, 20);
    BOOST_TEST(up.accepted() == 20);
    run_parallel(fn, 20);
    BOOST_TEST(up.accepted() == 24);
}

BOOST_AUTO_TEST_CASE(bad_specs_are_rejected_at_configuration) {
    auto spec = [](std::string url) {
        jobs::http_spec s;
        s.url = std::move(url);
        return s;
    };
    BOOST_TEST(!rejected(spec("http://127.0.0.1:9000/report")));
    BOOST_TEST(!rejected(spec("http://[::1]:9000")));
    BOOST_TEST(!rejected(spec("HTTP://example.com/a?b=c#frag")));
    BOOST_TEST(rejected(spec("https://example.com/report")));
    BOOST_TEST(rejected(spec("ftp://example.com/report")));
    BOOST_TEST(rejected(spec("not a url")));
    BOOST_TEST(rejected(spec("/relative/path")));
    BOOST_TEST(rejected(spec("http:///no-host")));
    BOOST_TEST(rejected(spec("http://user:secret@example.com/")));
    BOOST_TEST(rejected(spec("http://example.com:99999/")));
    auto bad_method = spec("http://example.com/");
    bad_method.method = "PO ST";
    BOOST_TEST(rejected(bad_method));
    auto bad_header = spec("http://example.com/");
    bad_header.headers = {{"X-Ok", "a\r\nInjected: yes"}};
    BOOST_TEST(rejected(bad_header));
    auto reserved = spec("http://example.com/");
    reserved.headers = {{"content-length", "5"}};
    BOOST_TEST(rejected(reserved));
}

BOOST_AUTO_TEST_SUITE_END()
