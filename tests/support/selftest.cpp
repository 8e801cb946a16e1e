// Checks the test support pieces against a canned in-process server and fake binaries.
#define BOOST_TEST_MODULE support_selftest
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <boost/test/unit_test.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "support/http_client.hpp"
#include "support/process.hpp"
#include "support/sse_client.hpp"
#include "support/wait.hpp"

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;
using namespace buzzer::test;

namespace {

// The SSE body served by /events: comments, multi-line data, CRLF and CR line ends, an
// unterminated last event that must be discarded. Served chunked in small pieces.
constexpr std::string_view events_first =
    "\xEF\xBB\xBFretry: 1500\n\n"
    ": hello comment\n\n"
    "id: 1\nevent: running\ndata: {\"a\":1}\n\n"
    "id: 2\r\nevent: progress\r\ndata: line one\r\ndata: line two\r\n\r\n";
constexpr std::string_view events_second =
    ": keepalive\r"
    "data: no id or type\r\r"
    "id: 3\nevent: completed\ndata:nospace\ndata\nretry: x\nunknown: y\n\n"
    "id: 4\ndata: never dispatched";

// A tiny synchronous Beast server, one thread per connection, serving canned responses.
class canned_server {
  public:
    canned_server() : acceptor_(ioc_, tcp::endpoint(asio::ip::address_v4::loopback(), 0)) {
        port_ = acceptor_.local_endpoint().port();
        acceptor_thread_ = std::thread([this] { accept_loop(); });
    }

    ~canned_server() {
        release_events();
        stopping_ = true;
        {
            // Wake the blocking accept().
            boost::system::error_code ignored;
            tcp::socket poke(ioc_);
            poke.connect(tcp::endpoint(asio::ip::address_v4::loopback(), port_), ignored);
        }
        acceptor_thread_.join();
        {
            std::lock_guard lock(mutex_);
            for (int fd : open_fds_) ::shutdown(fd, SHUT_RDWR);
        }
        for (auto& t : connections_) t.join();
    }

    unsigned short port() const { return port_; }

    // Lets /events send its second half.
    void release_events() {
        std::lock_guard lock(mutex_);
        released_ = true;
        released_cv_.notify_all();
    }

  private:
    void accept_loop() {
        for (int id = 1;; ++id) {
            tcp::socket socket(ioc_);
            boost::system::error_code ec;
            acceptor_.accept(socket, ec);
            if (ec || stopping_) return;
            {
                std::lock_guard lock(mutex_);
                open_fds_.push_back(socket.native_handle());
            }
            connections_.emplace_back(
                [this, id, s = std::move(socket)]() mutable { serve(std::move(s), id); });
        }
    }

    void serve(tcp::socket socket, int id) {
        beast::flat_buffer buffer;
        boost::system::error_code ec;
        for (;;) {
            http::request<http::string_body> req;
            http::read(socket, buffer, req, ec);
            if (ec == http::error::end_of_stream || ec == asio::error::eof || stopping_) break;
            if (ec) {
                asio::write(socket,
                            asio::buffer(std::string_view("HTTP/1.1 400 Bad Request\r\n"
                                                          "Content-Length: 3\r\n"
                                                          "Connection: close\r\n\r\nbad")),
                            ec);
                break;
            }
            if (!respond(socket, req, id)) break;
        }
        forget(socket.native_handle());
        socket.shutdown(tcp::socket::shutdown_both, ec);
        socket.close(ec);
    }

    // Writes the canned answer; false when the connection must be closed afterwards.
    bool respond(tcp::socket& socket, const http::request<http::string_body>& req, int id) {
        boost::system::error_code ec;
        auto const target = req.target();
        if (target == "/events") {
            write_chunked_events(socket);
            return false;
        }
        if (target == "/events-close") {
            // Close-delimited body: no length, no chunking, the end is the connection's end.
            asio::write(socket,
                        asio::buffer(std::string_view("HTTP/1.1 200 OK\r\n"
                                                      "Content-Type: text/event-stream\r\n"
                                                      "Connection: close\r\n\r\n"
                                                      "data: x\n\nid: 9\ndata: y\n\n")),
                        ec);
            return false;
        }
        http::response<http::string_body> res{http::status::ok, req.version()};
        res.set("X-Connection", std::to_string(id));
        res.keep_alive(req.keep_alive());
        if (target == "/hello") {
            res.set(http::field::content_type, "text/plain");
            res.set("X-Custom-Header", "Value-1");
            res.body() = "hello";
        } else if (target == "/json") {
            res.set(http::field::content_type, "application/json");
            res.body() = R"({"answer": 42, "list": [1, 2]})";
        } else if (target == "/not-json") {
            res.body() = "<html>oops</html>";
        } else if (target == "/multi") {
            res.insert(http::field::vary, "Accept");
            res.insert(http::field::vary, "Prefer");
        } else if (target == "/echo") {
            boost::json::object echo;
            echo["method"] = std::string(req.method_string());
            echo["content_type"] = std::string(req[http::field::content_type]);
            echo["x_test"] = std::string(req["X-Test"]);
            echo["body"] = req.body();
            res.set(http::field::content_type, "application/json");
            res.body() = boost::json::serialize(echo);
        } else if (target == "/close") {
            res.keep_alive(false);
            res.body() = "closing";
        } else if (target == "/drop") {
            // Advertise keep-alive, then close anyway: like a server's idle timeout firing.
            res.body() = "dropped";
            res.prepare_payload();
            http::write(socket, res, ec);
            return false;
        } else {
            res.result(http::status::not_found);
            res.set(http::field::content_type, "application/problem+json");
            res.body() = R"({"type": "/problems/not-found", "status": 404})";
        }
        res.prepare_payload();
        http::write(socket, res, ec);
        return !ec && res.keep_alive();
    }

    void write_chunked_events(tcp::socket& socket) {
        boost::system::error_code ec;
        http::response<http::empty_body> res{http::status::ok, 11};
        res.set(http::field::content_type, "text/event-stream");
        res.set(http::field::cache_control, "no-store");
        res.chunked(true);
        http::response_serializer<http::empty_body> sr{res};
        http::write_header(socket, sr, ec);
        auto const send = [&](std::string_view text) {
            // Small chunks, with a cut right after the first CR so a CRLF spans two chunks.
            auto const cr = text.find('\r');
            for (std::size_t pos = 0; pos < text.size() && !ec;) {
                auto n = std::min<std::size_t>(5, text.size() - pos);
                if (cr != std::string_view::npos && pos <= cr && cr < pos + n) n = cr - pos + 1;
                asio::write(socket, http::make_chunk(asio::buffer(text.substr(pos, n))), ec);
                pos += n;
            }
        };
        send(events_first);
        {
            std::unique_lock lock(mutex_);
            released_cv_.wait_for(lock, 10s, [this] { return released_; });
        }
        send(events_second);
        asio::write(socket, http::make_chunk_last(), ec);
    }

    void forget(int fd) {
        std::lock_guard lock(mutex_);
        open_fds_.erase(std::remove(open_fds_.begin(), open_fds_.end(), fd), open_fds_.end());
    }

    asio::io_context ioc_;
    tcp::acceptor acceptor_;
    unsigned short port_ = 0;
    std::atomic<bool> stopping_ = false;
    std::thread acceptor_thread_;
    std::vector<std::thread> connections_;  // touched by the acceptor thread until it is joined
    std::mutex mutex_;
    std::vector<int> open_fds_;
    std::condition_variable released_cv_;
    bool released_ = false;
};

// A fake server binary: a shell script in `dir` with `body` (after the shebang).
std::filesystem::path fake_binary(const temp_dir& dir, std::string_view body) {
    auto path = dir.write_file("fake-buzzer.sh", "#!/bin/sh\n" + std::string(body));
    std::filesystem::permissions(path, std::filesystem::perms::owner_all);
    return path;
}

// Prints its arguments and environment to stderr, listens, and exits 3 on SIGTERM.
constexpr std::string_view well_behaved = R"(trap 'echo "got TERM" >&2; exit 3' TERM
echo "starting up"
echo "args: $*" >&2
echo "env: $SELFTEST_VAR" >&2
echo "listening on http://127.0.0.1:4242"
echo "after listening"
while true; do sleep 1 >/dev/null 2>&1 & wait $!; done
)";

bool log_has(const server_process& server, std::string_view text) {
    return server.log_contents().find(text) != std::string::npos;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(support)

BOOST_AUTO_TEST_CASE(wait_until_polls_until_true_or_deadline) {
    int calls = 0;
    BOOST_TEST(wait_until([&] { return ++calls == 3; }, 2s, 1ms));
    BOOST_TEST(calls == 3);
    auto const start = std::chrono::steady_clock::now();
    BOOST_TEST(!wait_until([] { return false; }, 50ms, 10ms));
    BOOST_TEST((std::chrono::steady_clock::now() - start >= 50ms));
}

BOOST_AUTO_TEST_CASE(temp_dir_creates_and_removes_its_tree) {
    std::filesystem::path kept;
    {
        temp_dir dir;
        kept = dir.path();
        BOOST_TEST(std::filesystem::is_directory(kept));
        BOOST_TEST(kept.string().starts_with("/tmp/buzzer-test-"));
        std::filesystem::create_directories(dir / "a/b");
        auto const file = dir.write_file("a/b/c.txt", "content");
        BOOST_TEST(std::filesystem::file_size(file) == 7u);
        temp_dir moved = std::move(dir);
        BOOST_TEST(moved.path() == kept);
    }
    BOOST_TEST(!std::filesystem::exists(kept));
}

BOOST_AUTO_TEST_CASE(http_client_keeps_alive_and_reads_headers) {
    canned_server server;
    http_client client(server.port());
    auto const first = client.get("/hello");
    BOOST_TEST(first.status == 200);
    BOOST_TEST(first.body == "hello");
    BOOST_TEST(first.header("x-custom-header") == "Value-1");
    BOOST_TEST(first.header("CONTENT-TYPE") == "text/plain");
    BOOST_TEST(first.has_header("X-Connection"));
    BOOST_TEST(!first.has_header("X-Absent"));
    BOOST_TEST(first.header("X-Absent") == "");
    auto const second = client.get("/hello");
    BOOST_TEST(second.header("X-Connection") == first.header("X-Connection"));
    BOOST_TEST(client.connections_opened() == 1u);

    auto const multi = client.get("/multi");
    BOOST_TEST(multi.header("vary") == "Accept, Prefer");
    BOOST_TEST(multi.header_values("Vary").size() == 2u);

    auto const json_response = client.get("/json");
    BOOST_TEST(json_response.json().at("answer").as_int64() == 42);
    std::int64_t sum = 0;
    for (auto const& v : json_response.json().at("list").as_array()) sum += v.as_int64();
    BOOST_TEST(sum == 3);
    BOOST_CHECK_EXCEPTION(
        (void)client.get("/not-json").json(), std::runtime_error, [](const std::runtime_error& e) {
            return std::string(e.what()).find("<html>oops</html>") != std::string::npos;
        });

    auto const echo = client.post_json("/echo", R"({"x": 1})", {{"X-Test", "yes"}}).json();
    BOOST_TEST(echo.at("method").as_string() == "POST");
    BOOST_TEST(echo.at("content_type").as_string() == "application/json");
    BOOST_TEST(echo.at("x_test").as_string() == "yes");
    BOOST_TEST(echo.at("body").as_string() == R"({"x": 1})");
    auto const del = client.del("/echo").json();
    BOOST_TEST(del.at("method").as_string() == "DELETE");

    auto const missing = client.get("/nowhere");
    BOOST_TEST(missing.status == 404);
    BOOST_TEST(missing.json().at("type").as_string() == "/problems/not-found");
    BOOST_TEST(client.connections_opened() == 1u);
}

BOOST_AUTO_TEST_CASE(http_client_reconnects_after_server_closes) {
    canned_server server;
    http_client client(server.port());
    BOOST_TEST(client.get("/close").body == "closing");
    BOOST_TEST(client.get("/hello").status == 200);
    BOOST_TEST(client.connections_opened() == 2u);
    // The server closes a connection it advertised as kept alive: the next request retries.
    BOOST_TEST(client.get("/drop").body == "dropped");
    BOOST_TEST(client.get("/hello").status == 200);
    BOOST_TEST(client.post_json("/echo", "{}").status == 200);
    BOOST_TEST(client.connections_opened() == 3u);
}

BOOST_AUTO_TEST_CASE(http_client_reports_connection_refused) {
    unsigned short port = 0;
    {
        canned_server server;
        port = server.port();
    }
    http_client client(port, 2s);
    BOOST_CHECK_THROW((void)client.get("/hello"), std::runtime_error);
}

BOOST_AUTO_TEST_CASE(raw_exchange_returns_what_the_server_sent) {
    canned_server server;
    auto const reply = raw_exchange(server.port(), "GARBAGE\r\n\r\n", 5s);
    BOOST_TEST(reply.starts_with("HTTP/1.1 400 Bad Request\r\n"));
    BOOST_TEST(reply.ends_with("\r\n\r\nbad"));
}

BOOST_AUTO_TEST_CASE(raw_connection_sends_slowly) {
    canned_server server;
    auto connection = raw_connect(server.port());
    BOOST_TEST(!connection.send("GET /hello HTTP/1.1\r\nHost: x\r\n"));
    BOOST_TEST(connection.receive(50ms) == "");
    BOOST_TEST(!connection.closed());
    BOOST_TEST(!connection.send("\r\n"));
    std::string reply;
    BOOST_TEST(wait_until(
        [&] {
            reply += connection.receive(100ms);
            return reply.ends_with("hello");
        },
        5s, 1ms));
    BOOST_TEST(reply.starts_with("HTTP/1.1 200 OK\r\n"));
    connection.shutdown_send();
    BOOST_TEST(connection.receive_until_close(5s) == "");
    BOOST_TEST(connection.closed());
}

BOOST_AUTO_TEST_CASE(sse_stream_parses_a_chunked_event_stream) {
    canned_server server;
    sse_stream stream(server.port(), "/events", "0", {{"X-Extra", "1"}});
    BOOST_TEST(stream.status() == 200);
    BOOST_TEST(stream.header("content-type") == "text/event-stream");
    BOOST_TEST(stream.has_header("Cache-Control"));

    auto running = stream.next_event(5s);
    BOOST_REQUIRE(running);
    BOOST_TEST(stream.retry().value_or(0) == 1500u);
    BOOST_TEST(stream.comments() == 1u);
    BOOST_TEST(stream.last_comment() == "hello comment");
    BOOST_TEST(*running->id == "1");
    BOOST_TEST(running->type == "running");
    BOOST_TEST(running->data == R"({"a":1})");
    BOOST_TEST(!running->retry);

    auto progress = stream.next_event(5s);
    BOOST_REQUIRE(progress);
    BOOST_TEST(*progress->id == "2");
    BOOST_TEST(progress->type == "progress");
    BOOST_TEST(progress->data == "line one\nline two");

    // The server holds back the rest: a timeout is not the end of the stream.
    BOOST_TEST(!stream.next_event(100ms));
    BOOST_TEST(!stream.ended());
    server.release_events();

    auto plain = stream.next_event(5s);
    BOOST_REQUIRE(plain);
    BOOST_TEST(stream.comments() == 2u);
    BOOST_TEST(stream.last_comment() == "keepalive");
    BOOST_TEST(!plain->id);
    BOOST_TEST(plain->type == "message");
    BOOST_TEST(plain->data == "no id or type");
    BOOST_TEST(stream.last_event_id() == "2");

    auto rest = stream.read_until_end(5s);
    BOOST_TEST(stream.ended());
    BOOST_REQUIRE(rest.size() == 1u);
    BOOST_TEST(*rest[0].id == "3");
    BOOST_TEST(rest[0].type == "completed");
    BOOST_TEST(rest[0].data == "nospace\n");
    BOOST_TEST(stream.retry().value_or(0) == 1500u);
    BOOST_TEST(stream.last_event_id() == "3");
    BOOST_TEST(!stream.next_event(1s));
    BOOST_TEST(stream.raw_text().ends_with("never dispatched"));
}

BOOST_AUTO_TEST_CASE(sse_stream_reads_a_close_delimited_stream) {
    canned_server server;
    sse_stream stream(server.port(), "/events-close");
    auto events = stream.read_until_end(5s);
    BOOST_TEST(stream.ended());
    BOOST_REQUIRE(events.size() == 2u);
    BOOST_TEST(events[0].data == "x");
    BOOST_TEST(*events[1].id == "9");
    BOOST_TEST(events[1].data == "y");
}

BOOST_AUTO_TEST_CASE(sse_stream_keeps_a_non_stream_answer) {
    canned_server server;
    sse_stream stream(server.port(), "/unknown");
    BOOST_TEST(stream.status() == 404);
    BOOST_TEST(stream.header("Content-Type") == "application/problem+json");
    BOOST_TEST(stream.head().json().at("status").as_int64() == 404);
    BOOST_TEST(stream.ended());
    BOOST_TEST(!stream.next_event(1s));
}

BOOST_AUTO_TEST_CASE(server_process_starts_logs_and_terminates) {
    temp_dir dir;
    auto const binary = fake_binary(dir, well_behaved);
    server_process server(
        {.args = {"--extra", "1"}, .env = {{"SELFTEST_VAR", "hello"}}, .binary = binary});
    BOOST_TEST(server.port() == 4242);
    BOOST_TEST(server.host() == "127.0.0.1");
    BOOST_TEST(server.base_url() == "http://127.0.0.1:4242");
    BOOST_TEST(server.pid() > 0);
    BOOST_TEST(server.running());
    auto const args =
        "args: --listen 127.0.0.1:0 --database " + server.database_path().string() + " --extra 1";
    BOOST_TEST(wait_until([&] { return log_has(server, "after listening"); }, 5s));
    BOOST_TEST(log_has(server, "starting up"));
    BOOST_TEST(log_has(server, args));
    BOOST_TEST(log_has(server, "env: hello"));
    BOOST_TEST(server.terminate(5s) == 3);
    BOOST_TEST(!server.running());
    BOOST_TEST(log_has(server, "got TERM"));
}

BOOST_AUTO_TEST_CASE(server_process_kill9_and_restart_on_the_same_database) {
    temp_dir dir;
    ::setenv("BUZZER_TEST_BINARY", fake_binary(dir, well_behaved).c_str(), 1);
    auto const database = dir / "shared.db";
    {
        server_process first(database);
        BOOST_TEST(first.database_path() == database);
        first.kill9();
        BOOST_TEST(!first.running());
        BOOST_TEST(first.terminate(1s) == 128 + 9);
    }
    server_process second(database);
    ::unsetenv("BUZZER_TEST_BINARY");
    BOOST_TEST(second.running());
    BOOST_TEST(wait_until([&] { return log_has(second, database.string()); }, 5s));
}

BOOST_AUTO_TEST_CASE(server_process_adds_the_flags_of_the_run_but_for_those_a_test_gives) {
    temp_dir dir;
    auto const binary = fake_binary(dir, well_behaved);
    // Unset again however the case ends: the cases after it start servers too.
    struct unset_at_exit {
        ~unset_at_exit() {
            ::unsetenv("BUZZER_TEST_SERVER_ARGS");
            ::unsetenv("BUZZER_TEST_BINARY");
        }
    } unset;
    ::setenv("BUZZER_TEST_BINARY", binary.c_str(), 1);
    ::setenv("BUZZER_TEST_SERVER_ARGS", " --threads 1\t--synchronous  normal --no-builtin-kinds ",
             1);
    BOOST_TEST(
        (server_args_of_the_run() == std::vector<std::string>{"--threads", "1", "--synchronous",
                                                              "normal", "--no-builtin-kinds"}));
    BOOST_TEST(server_arg_of_the_run("--threads").value_or("") == "1");
    BOOST_TEST(server_arg_of_the_run("--synchronous").value_or("") == "normal");
    BOOST_TEST(!server_arg_of_the_run("--no-builtin-kinds"));
    BOOST_TEST(!server_arg_of_the_run("--thread"));
    auto const args_of = [](const server_process& server) {
        return "args: --listen 127.0.0.1:0 --database " + server.database_path().string();
    };
    {
        server_process server(server_options{.args = {"--max-running", "2"}});
        BOOST_TEST(wait_until([&] { return log_has(server, "after listening"); }, 5s));
        BOOST_TEST(
            log_has(server, args_of(server) + " --max-running 2 --threads 1 --synchronous normal "
                                              "--no-builtin-kinds\n"),
            server.log_contents());
    }
    {
        // The test's own --threads (in either form) wins; the other flags are still added.
        server_process server(server_options{.args = {"--threads=4", "--no-builtin-kinds"}});
        BOOST_TEST(wait_until([&] { return log_has(server, "after listening"); }, 5s));
        BOOST_TEST(log_has(server, args_of(server) +
                                       " --threads=4 --no-builtin-kinds --synchronous normal\n"),
                   server.log_contents());
    }
    {
        // Not for a server that asks for none, nor for another binary.
        server_process none(server_options{.run_args = false});
        server_process other(server_options{.binary = binary});
        for (auto* server : {&none, &other}) {
            BOOST_TEST(wait_until([&] { return log_has(*server, "after listening"); }, 5s));
            BOOST_TEST(log_has(*server, args_of(*server) + "\n"), server->log_contents());
        }
    }
    ::unsetenv("BUZZER_TEST_SERVER_ARGS");
    BOOST_TEST(server_args_of_the_run().empty());
}

BOOST_AUTO_TEST_CASE(server_process_reports_an_early_exit) {
    temp_dir dir;
    auto const binary = fake_binary(dir, "echo 'bad config: oops' >&2\nexit 2\n");
    BOOST_CHECK_EXCEPTION(server_process({.binary = binary}), std::runtime_error,
                          [](const std::runtime_error& e) {
                              std::string const what = e.what();
                              return what.find("exited with code 2") != std::string::npos &&
                                     what.find("bad config: oops") != std::string::npos;
                          });
}

BOOST_AUTO_TEST_CASE(server_process_gives_up_at_the_startup_deadline) {
    temp_dir dir;
    auto const binary = fake_binary(dir, "echo 'not the line'\nexec sleep 30\n");
    auto const start = std::chrono::steady_clock::now();
    BOOST_CHECK_EXCEPTION(server_process({.startup_deadline = 300ms, .binary = binary}),
                          std::runtime_error, [](const std::runtime_error& e) {
                              std::string const what = e.what();
                              return what.find("no 'listening on") != std::string::npos &&
                                     what.find("not the line") != std::string::npos;
                          });
    BOOST_TEST((std::chrono::steady_clock::now() - start < 5s));
}

BOOST_AUTO_TEST_CASE(run_process_captures_output_and_exit_code) {
    auto const result =
        run_process("/bin/sh", {"-c", "echo out; echo err >&2; echo $V; exit 4"}, 5s, {{"V", "v"}});
    BOOST_TEST(result.exit_code == 4);
    BOOST_TEST(result.out == "out\nv\n");
    BOOST_TEST(result.err == "err\n");
    BOOST_TEST(!result.timed_out);
    auto const slow = run_process("/bin/sh", {"-c", "exec sleep 30"}, 200ms);
    BOOST_TEST(slow.timed_out);
    BOOST_TEST(slow.exit_code == 128 + 9);
}

BOOST_AUTO_TEST_SUITE_END()
