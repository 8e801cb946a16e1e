#define BOOST_TEST_MODULE integration_config
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <boost/test/unit_test.hpp>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "integration/common.hpp"
#include "support/loopback_server.hpp"
#include "support/wait.hpp"

using namespace buzzer::test;
namespace json = boost::json;
namespace asio = boost::asio;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

namespace {

// Runs one operation of `kind` on a server started with the configuration file `config` and
// answers its result.
response result_of_kind(const std::filesystem::path& config, const std::string& kind) {
    server_process server{server_options{.args = {"--config", config.string()}}};
    http_client client{server.port()};
    auto id = submit(client, R"({"kind":")" + kind + R"("})");
    wait_for_status(client, id, "succeeded");
    return client.get("/operations/" + id);
}

// A field of /proc/PID/status in KiB (VmRSS, VmHWM), or -1.
long long status_kib(pid_t pid, const std::string& field) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/status");
    for (std::string line; std::getline(f, line);)
        if (line.starts_with(field + ":")) return std::stoll(line.substr(field.size() + 1));
    return -1;
}

std::string str(const json::object& o, std::string_view key) {
    const auto* v = o.if_contains(key);
    return v && v->is_string() ? std::string(v->as_string()) : std::string();
}

// Seconds since `t`.
double seconds_since(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// Polls the status monitor until the operation is terminal; returns that representation and
// calls `at_once` with it first, before anything else happens in the test.
template <class F>
json::object first_terminal(http_client& c, const std::string& id, F at_once,
                            std::chrono::milliseconds deadline = 20s) {
    json::object last;
    bool ok = wait_until(
        [&] {
            last = status_of(c, id);
            auto st = str(last, "status");
            return st == "succeeded" || st == "failed" || st == "canceled";
        },
        deadline, 5ms);
    BOOST_TEST_REQUIRE(ok, "operation " << id << " did not end: " << json::serialize(last));
    at_once(last);
    return last;
}

// The upstream of the http kinds: a Beast server on its own thread. Routes:
//   /hang never answers   /redirect 302   /truncated 10 of 100 bytes, then a close
//   /huge 200 with a 1 GiB body, sent until the client goes   /missing 404 "no such report"
//   /unavailable 503   anything else 200 with the request body
class upstream_server {
  public:
    upstream_server() = default;
    upstream_server(const upstream_server&) = delete;
    upstream_server& operator=(const upstream_server&) = delete;

    std::string url(const std::string& path) const { return listener_.url(path); }
    // How many requests came for `path`.
    int requests(const std::string& path) const {
        std::lock_guard lock(mutex_);
        auto it = requests_.find(path);
        return it == requests_.end() ? 0 : it->second;
    }
    std::atomic<long long> huge_bytes_sent{0};

  private:
    static constexpr auto tuple = asio::as_tuple(asio::use_awaitable);

    asio::awaitable<void> serve(tcp::socket sock) {
        boost::beast::flat_buffer buffer;
        for (;;) {
            bhttp::request<bhttp::string_body> req;
            auto [ec, n] = co_await bhttp::async_read(sock, buffer, req, tuple);
            if (ec) co_return;
            std::string path(req.target());
            {
                std::lock_guard lock(mutex_);
                ++requests_[path];
            }
            std::string raw;
            if (path == "/hang") {
                char byte = 0;
                co_await sock.async_read_some(asio::buffer(&byte, 1), tuple);
                co_return;
            } else if (path == "/redirect") {
                raw =
                    "HTTP/1.1 302 Found\r\nLocation: http://elsewhere.example/\r\n"
                    "Content-Length: 0\r\n\r\n";
            } else if (path == "/truncated") {
                raw =
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n"
                    "0123456789";
                co_await asio::async_write(sock, asio::buffer(raw), tuple);
                co_return;
            } else if (path == "/huge") {
                raw =
                    "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                    "Content-Length: 1073741824\r\n\r\n";
                co_await asio::async_write(sock, asio::buffer(raw), tuple);
                std::string const block(64 * 1024, 'h');
                for (long long sent = 0; sent < (1LL << 30); sent += block.size()) {
                    auto [wec, wn] = co_await asio::async_write(sock, asio::buffer(block), tuple);
                    if (wec) co_return;
                    huge_bytes_sent += static_cast<long long>(wn);
                }
                co_return;
            } else if (path == "/missing") {
                raw =
                    "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n"
                    "Content-Length: 15\r\n\r\nno such report\n";
            } else if (path == "/unavailable") {
                raw =
                    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
                    "Content-Length: 10\r\n\r\noverloaded";
            } else {
                raw = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
                      std::to_string(req.body().size()) + "\r\n\r\n" + req.body();
            }
            auto [wec, wn] = co_await asio::async_write(sock, asio::buffer(raw), tuple);
            if (wec) co_return;
        }
    }

    mutable std::mutex mutex_;
    std::map<std::string, int> requests_;
    loopback_server listener_{[this](tcp::socket s) { return serve(std::move(s)); }};
};

}  // namespace

BOOST_AUTO_TEST_CASE(a_kind_runs_no_more_jobs_at_once_than_its_concurrency) {
    temp_dir dir;
    auto config = dir.write_file("buzzer.json", R"({
        "kinds": {"single": {"exec": {"argv": ["/bin/sleep", "30"]}, "concurrency": 1}}
    })");
    server_process server{server_options{.args = {"--config", config.string()}}};
    http_client client{server.port()};
    auto first = submit(client, R"({"kind":"single"})");
    auto second = submit(client, R"({"kind":"single"})");
    auto other = submit(client, R"({"kind":"sleep","input":{"seconds":30}})");
    wait_for_status(client, first, "running");
    wait_for_status(client, other, "running");  // other kinds are not held back
    auto held = status_of(client, second);
    BOOST_TEST(str(held, "status") == "pending");
    BOOST_TEST(held.at("attempt").as_int64() == 0);
    client.post_json("/operations/" + first + "/cancel", "");
    wait_for_status(client, first, "canceled");
    wait_for_status(client, second, "running");
    for (const auto& id : {second, other}) {
        client.post_json("/operations/" + id + "/cancel", "");
        wait_for_status(client, id, "canceled");
    }
}

BOOST_AUTO_TEST_CASE(a_line_break_in_a_result_media_type_cannot_add_a_header) {
    temp_dir dir;
    auto config = dir.write_file("buzzer.json", R"({"kinds": {"inject": {"exec": {
        "argv": ["/bin/sh", "-c", "printf hi > out.txt; printf '%s\n' '{\"result_file\": {\"path\": \"out.txt\", \"media_type\": \"text/plain\\r\\nX-Injected: yes\"}}'"],
        "cwd": ")" + dir.path().string() + R"("}}}})");
    auto r = result_of_kind(config, "inject");
    BOOST_TEST(r.status == 200);
    BOOST_TEST(r.body == "hi");
    BOOST_TEST(!r.has_header("X-Injected"));
    BOOST_TEST(r.header("Content-Type").starts_with("text/plain"), r.header("Content-Type"));
}

BOOST_AUTO_TEST_CASE(an_exec_result_is_kept_as_the_command_printed_it) {
    temp_dir dir;
    auto config = dir.write_file("buzzer.json", R"({"kinds": {"numbers": {"exec": {
        "argv": ["/bin/sh", "-c", "echo '{\"result\":  {\"n\":12345678901234567890123,\"x\":1e400,\"z\":-0} }'"]}}}})");
    auto r = result_of_kind(config, "numbers");
    BOOST_TEST(r.status == 200);
    BOOST_TEST(r.header("Content-Type").starts_with("application/json"));
    BOOST_TEST(r.body == R"({"n":12345678901234567890123,"x":1e400,"z":-0})");
}

BOOST_AUTO_TEST_CASE(a_canceled_command_can_still_write_while_it_cleans_up) {
    // Its trap logs to stdout and stderr before it marks the clean-up done: with the pipes
    // closed at SIGTERM, the first echo would end it by SIGPIPE.
    temp_dir dir;
    auto marker = dir.path() / "cleaned";
    auto script = dir.write_file("tidy.sh", R"(trap 'echo stopping; echo stopping >&2; touch )" +
                                                marker.string() + R"(; exit 0' TERM
echo '{"progress": {"percent": 1, "message": "up"}}'
while :; do sleep 0.05; done
)");
    auto config = dir.write_file("buzzer.json", R"({"kinds": {"tidy": {"exec": {
        "argv": ["/bin/sh", ")" + script.string() + R"("]}}}})");
    server_process server{server_options{.args = {"--config", config.string()}}};
    http_client client{server.port()};
    auto id = submit(client, R"({"kind":"tidy"})");
    wait_for_progress(client, id);
    BOOST_TEST(client.post_json("/operations/" + id + "/cancel", "").status == 202);
    wait_for_status(client, id, "canceled", 10s);
    BOOST_TEST(std::filesystem::exists(marker));
}

BOOST_AUTO_TEST_CASE(configured_exec_kind_runs_a_command) {
    temp_dir dir;
    auto config = dir.write_file("buzzer.json", R"({
        "kinds": {
            "shout": {
                "exec": {"argv": ["/bin/sh", "-c",
                  "read in; echo '{\"progress\": {\"percent\": 50, \"message\": \"half\"}}'; echo \"{\\\"result\\\": {\\\"got\\\": $in, \\\"op\\\": \\\"$BUZZER_OPERATION_ID\\\"}}\""]},
                "timeout_s": 10, "max_attempts": 2, "concurrency": 2,
                "input": {"type": "object", "required": ["word"], "properties": {"word": {"type": "string"}}}
            }
        }
    })");
    server_process server{server_options{.args = {"--config", config.string()}}};
    http_client client{server.port()};
    bool listed = false;
    auto kinds = client.get("/kinds");
    for (const auto& k : kinds.json().as_object().at("kinds").as_array())
        if (k.as_object().at("name").as_string() == "shout") {
            listed = true;
            BOOST_TEST(k.as_object().at("executor").as_string() == "exec");
            BOOST_TEST(k.as_object().at("max_attempts").as_int64() == 2);
        }
    BOOST_TEST(listed);
    auto bad = client.post_json("/operations", R"({"kind":"shout","input":{}})");
    BOOST_TEST(bad.status == 422);
    BOOST_TEST(detail_of(bad.json().as_object()) == "input.word is required");
    auto id = submit(client, R"({"kind":"shout","input":{"word":"hi"}})");
    wait_for_status(client, id, "succeeded");
    auto result = client.get("/operations/" + id).json().as_object();
    BOOST_TEST(result.at("got") == json::parse(R"({"word":"hi"})"));
    BOOST_TEST(result.at("op").as_string() == id);
}

BOOST_AUTO_TEST_CASE(invalid_config_exits_2_naming_the_key) {
    temp_dir dir;
    auto unknown = dir.write_file("a.json", R"({"listen": "127.0.0.1:0", "colour": "blue"})");
    auto r = run_buzzer({"--config", unknown.string()});
    BOOST_TEST(r.exit_code == 2);
    BOOST_TEST(r.err.find("a.json") != std::string::npos);
    BOOST_TEST(r.err.find("colour") != std::string::npos);
    auto no_argv = dir.write_file("b.json", R"({"kinds": {"k": {"exec": {"cwd": "."}}}})");
    r = run_buzzer({"--config", no_argv.string()});
    BOOST_TEST(r.exit_code == 2);
    BOOST_TEST(r.err.find("b.json") != std::string::npos, r.err);
    BOOST_TEST(r.err.find("kinds.k.exec.argv") != std::string::npos, r.err);
    auto empty_argv = dir.write_file("argv.json", R"({"kinds": {"k": {"exec": {"argv": []}}}})");
    r = run_buzzer({"--config", empty_argv.string()});
    BOOST_TEST(r.exit_code == 2);
    BOOST_TEST(r.err.find("argv.json") != std::string::npos, r.err);
    BOOST_TEST(r.err.find("kinds.k.exec.argv") != std::string::npos, r.err);
    auto unknown_executor = dir.write_file(
        "grpc.json", R"({"kinds": {"k": {"grpc": {"url": "http://127.0.0.1:1/"}}}})");
    r = run_buzzer({"--config", unknown_executor.string()});
    BOOST_TEST(r.exit_code == 2);
    BOOST_TEST(r.err.find("grpc.json") != std::string::npos, r.err);
    BOOST_TEST(r.err.find("kinds.k.grpc") != std::string::npos, r.err);
    auto no_executor = dir.write_file("none.json", R"({"kinds": {"k": {"timeout_s": 5}}})");
    r = run_buzzer({"--config", no_executor.string()});
    BOOST_TEST(r.exit_code == 2);
    BOOST_TEST(r.err.find("none.json") != std::string::npos, r.err);
    BOOST_TEST(r.err.find("kinds.k") != std::string::npos, r.err);
    BOOST_TEST(r.err.find("executor") != std::string::npos, r.err);
    auto bad_schema = dir.write_file(
        "c.json",
        R"({"kinds": {"k": {"http": {"url": "http://127.0.0.1:1/"}, "input": {"type": "text"}}}})");
    r = run_buzzer({"--config", bad_schema.string()});
    BOOST_TEST(r.exit_code == 2);
    BOOST_TEST(r.err.find("kinds.k.input.type") != std::string::npos);
    r = run_buzzer({"--config", (dir / "missing.json").string()});
    BOOST_TEST(r.exit_code == 2);
    for (std::string url :
         {"not a url", "ftp://example.com", "https://", "/relative", "https://example.com/?q=1"}) {
        BOOST_TEST_CONTEXT(url) {
            auto file = dir.write_file("url.json", R"({"public_url": ")" + url + R"("})");
            r = run_buzzer({"--config", file.string()});
            BOOST_TEST(r.exit_code == 2);
            BOOST_TEST(r.err.find("url.json: public_url") != std::string::npos, r.err);
            r = run_buzzer({"--public-url", url});
            BOOST_TEST(r.exit_code == 2);
            BOOST_TEST(r.err.find("--public-url") != std::string::npos, r.err);
        }
    }
    for (std::string listen : {"nohost", "127.0.0.1:", "127.0.0.1:70000", "127.0.0.1:http"}) {
        BOOST_TEST_CONTEXT(listen) {
            r = run_buzzer({"--listen", listen});
            BOOST_TEST(r.exit_code == 2);
            BOOST_TEST(r.err.find("--listen") != std::string::npos, r.err);
        }
    }
}

// A bad value of one setting, on the command line or in the configuration file, and the
// message it must get (after "buzzer: "; for a file, after "FILE: ").
struct bad_setting {
    std::vector<std::string> flag;  ///< the arguments; empty: `file` is the test
    std::string file;               ///< the configuration file's text
    std::string message;
};

// The ranges of the settings table, as the messages spell them.
const std::string max_running = "must be an integer from 1 to 1000000";
const std::string threads = "must be an integer from 0 to 256";
const std::string header_timeout = "must be a number from 0.1 to 3600";

const std::vector<bad_setting> bad_settings{
    // Out of range, negative, fractional, not a number, empty: flags.
    {{"--max-running", "0"}, "", "--max-running: " + max_running + " (got 0)"},
    {{"--max-running", "1000001"}, "", "--max-running: " + max_running + " (got 1000001)"},
    {{"--max-running", "-1"}, "", "--max-running: " + max_running + " (got -1)"},
    {{"--max-running", "2.5"}, "", "--max-running: " + max_running + " (got 2.5)"},
    {{"--max-running", "many"}, "", "--max-running: " + max_running + " (got many)"},
    {{"--max-running", ""}, "", "--max-running: " + max_running + " (got \"\")"},
    {{"--max-running=1e400"}, "", "--max-running: " + max_running + " (got 1e400)"},
    {{"--header-timeout", "-1"}, "", "--header-timeout: " + header_timeout + " (got -1)"},
    {{"--header-timeout", "0"}, "", "--header-timeout: " + header_timeout + " (got 0)"},
    {{"--header-timeout", "3601"}, "", "--header-timeout: " + header_timeout + " (got 3601)"},
    {{"--header-timeout", "soon"}, "", "--header-timeout: " + header_timeout + " (got soon)"},
    {{"--header-timeout", "nan"}, "", "--header-timeout: " + header_timeout + " (got nan)"},
    {{"--header-timeout", "inf"}, "", "--header-timeout: " + header_timeout + " (got inf)"},
    {{"--threads", "100000"}, "", "--threads: " + threads + " (got 100000)"},
    {{"--threads", "-1"}, "", "--threads: " + threads + " (got -1)"},
    {{"--threads", "0x10"}, "", "--threads: " + threads + " (got 0x10)"},
    {{"--idle-timeout", "0.05"},
     "",
     "--idle-timeout: must be a number from 0.1 to 86400 (got 0.05)"},
    {{"--sse-heartbeat", "0.01"},
     "",
     "--sse-heartbeat: must be a number from 0.05 to 3600 (got 0.01)"},
    {{"--sse-retry-ms", "3600001"},
     "",
     "--sse-retry-ms: must be an integer from 0 to 3600000 (got 3600001)"},
    {{"--sse-backlog", "0"}, "", "--sse-backlog: must be an integer from 1 to 1048576 (got 0)"},
    {{"--body-limit", "1023"},
     "",
     "--body-limit: must be an integer from 1024 to 1073741824 (got 1023)"},
    {{"--body-limit", "1073741825"},
     "",
     "--body-limit: must be an integer from 1024 to 1073741824 (got 1073741825)"},
    {{"--header-limit", "100"},
     "",
     "--header-limit: must be an integer from 1024 to 1048576 (got 100)"},
    {{"--retention", "-1"}, "", "--retention: must be a number from 0 to 315360000 (got -1)"},
    {{"--shutdown-grace", "3601"},
     "",
     "--shutdown-grace: must be a number from 0 to 3600 (got 3601)"},
    {{"--write-timeout", "0"}, "", "--write-timeout: must be a number from 0.1 to 3600 (got 0)"},
    {{"--write-timeout", "-30"},
     "",
     "--write-timeout: must be a number from 0.1 to 3600 (got -30)"},
    {{"--max-connections", "0"},
     "",
     "--max-connections: must be an integer from 1 to 1000000 (got 0)"},
    {{"--max-connections", "1e7"},
     "",
     "--max-connections: must be an integer from 1 to 1000000 (got 1e7)"},
    {{"--max-connections", "lots"},
     "",
     "--max-connections: must be an integer from 1 to 1000000 (got lots)"},
    {{"--max-pending", "0"}, "", "--max-pending: must be an integer from 1 to 1000000000 (got 0)"},
    {{"--synchronous", "fast"}, "", "--synchronous: must be full or normal (got fast)"},
    {{"--listen", "127.0.0.1:99999"},
     "",
     "--listen: must be HOST:PORT such as 127.0.0.1:8080 (got 127.0.0.1:99999)"},
    {{"--public-url", "ftp://example.com"},
     "",
     "--public-url: must be an absolute http or https URL such as https://api.example.com "
     "(got ftp://example.com)"},
    // The same ranges in the configuration file, and values of the wrong JSON type.
    {{}, R"({"max_running": 0})", "max_running: " + max_running + " (got 0)"},
    {{}, R"({"max_running": "8"})", "max_running: " + max_running + " (got \"8\")"},
    {{}, R"({"max_running": 2.5})", "max_running: " + max_running + " (got 2.5)"},
    {{}, R"({"max_running": -3})", "max_running: " + max_running + " (got -3)"},
    {{}, R"({"max_running": null})", "max_running: " + max_running + " (got null)"},
    {{}, R"({"threads": 100000})", "threads: " + threads + " (got 100000)"},
    {{}, R"({"threads": -1})", "threads: " + threads + " (got -1)"},
    {{}, R"({"header_timeout_s": -1})", "header_timeout_s: " + header_timeout + " (got -1)"},
    {{}, R"({"header_timeout_s": "10"})", "header_timeout_s: " + header_timeout + " (got \"10\")"},
    {{},
     R"({"header_timeout_s": 1e400})",
     "header_timeout_s: " + header_timeout + " (got a number too large to represent)"},
    {{}, R"({"idle_timeout_s": 0})", "idle_timeout_s: must be a number from 0.1 to 86400 (got 0)"},
    {{}, R"({"sse_retry_ms": -5})", "sse_retry_ms: must be an integer from 0 to 3600000 (got -5)"},
    {{},
     R"({"sse_backlog": 1048577})",
     "sse_backlog: must be an integer from 1 to 1048576 (got 1048577)"},
    {{},
     R"({"body_limit": [1]})",
     "body_limit: must be an integer from 1024 to 1073741824 (got [1])"},
    {{},
     R"({"header_limit": {}})",
     "header_limit: must be an integer from 1024 to 1048576 (got {})"},
    {{},
     R"({"retention_s": -0.5})",
     "retention_s: must be a number from 0 to 315360000 (got -0.5)"},
    {{},
     R"({"shutdown_grace_s": true})",
     "shutdown_grace_s: must be a number from 0 to 3600 (got true)"},
    {{},
     R"({"max_pending": 1e10})",
     "max_pending: must be an integer from 1 to 1000000000 (got 10000000000)"},
    {{},
     R"({"write_timeout_s": "30"})",
     "write_timeout_s: must be a number from 0.1 to 3600 (got \"30\")"},
    {{},
     R"({"write_timeout_s": 3600.5})",
     "write_timeout_s: must be a number from 0.1 to 3600 (got 3600.5)"},
    {{},
     R"({"max_connections": 0})",
     "max_connections: must be an integer from 1 to 1000000 (got 0)"},
    {{},
     R"({"max_connections": 10.5})",
     "max_connections: must be an integer from 1 to 1000000 (got 10.5)"},
    {{}, R"({"synchronous": "fast"})", "synchronous: must be full or normal (got \"fast\")"},
    {{}, R"({"synchronous": 1})", "synchronous: must be full or normal (got 1)"},
    {{}, R"({"builtin_kinds": "no"})", "builtin_kinds: must be true or false (got \"no\")"},
    {{}, R"({"listen": 8080})", "listen: must be HOST:PORT such as 127.0.0.1:8080 (got 8080)"},
    {{}, R"({"database": 5})", "database: must be a file path or a postgresql:// URI (got 5)"},
    {{},
     R"({"public_url": "https://"})",
     "public_url: must be an absolute http or https URL such as https://api.example.com "
     "(got \"https://\")"},
};

BOOST_AUTO_TEST_CASE(every_bad_setting_exits_2_naming_the_setting_and_its_range) {
    temp_dir dir;
    for (const auto& bad : bad_settings) {
        std::vector<std::string> args = bad.flag;
        std::string expected = "buzzer: " + bad.message + "\n";
        if (args.empty()) {
            auto file = dir.write_file("bad.json", bad.file);
            args = {"--config", file.string()};
            expected = "buzzer: " + file.string() + ": " + bad.message + "\n";
        }
        // A database that would be made if the server got as far as starting.
        args.insert(args.end(), {"--database", (dir / "never.db").string()});
        BOOST_TEST_CONTEXT((bad.flag.empty() ? bad.file : bad.flag.front())) {
            auto r = run_buzzer(args, 10s);
            BOOST_TEST(!r.timed_out);
            BOOST_TEST(r.exit_code == 2);
            // The one line and nothing else: no sanitizer report, no terminate, no start.
            BOOST_TEST(r.err == expected);
            BOOST_TEST(r.out.empty(), r.out);
        }
    }
    BOOST_TEST(!std::filesystem::exists(dir / "never.db"));
}

// Submits to `server` and checks that the 202's Location starts with `prefix`.
void check_links_start_with(server_process& server, const std::string& prefix) {
    http_client client{server.port()};
    auto r = client.post_json("/operations", R"({"kind":"echo","input":1})");
    BOOST_TEST_REQUIRE(r.status == 202);
    BOOST_TEST(r.header("Location").starts_with(prefix), r.header("Location"));
}

BOOST_AUTO_TEST_CASE(flags_override_the_configuration_file) {
    temp_dir dir;
    auto config = dir.write_file("buzzer.json",
                                 R"({"public_url": "https://file.example", "max_running": 3})");
    server_process server{server_options{
        .args = {"--config", config.string(), "--public-url", "https://flag.example"}}};
    check_links_start_with(server, "https://flag.example/operations/");
}

BOOST_AUTO_TEST_CASE(a_configuration_file_may_have_comments_and_trailing_commas) {
    temp_dir dir;
    auto config = dir.write_file("buzzer.json", R"({
        // Where links point.
        "public_url": "https://file.example", /* behind the proxy */
        "max_running": 3,
    })");
    server_process server{server_options{.args = {"--config", config.string()}}};
    check_links_start_with(server, "https://file.example/operations/");
}

BOOST_AUTO_TEST_CASE(a_sigterm_as_soon_as_it_listens_stops_at_once) {
    // The first purge may still be running: its timer must not outlive the shutdown.
    for (int i = 0; i < 5; ++i) {
        server_process server;
        const auto start = std::chrono::steady_clock::now();
        BOOST_TEST(server.terminate() == 0);
        BOOST_TEST(seconds_since(start) < 3.0);
        BOOST_TEST(server.log_contents().find("work still running") == std::string::npos,
                   server.log_contents());
    }
}

BOOST_AUTO_TEST_CASE(json_logs_are_an_object_a_line_and_the_level_filters_lines) {
    server_process server{server_options{.args = {"--log-format", "json"}}};
    BOOST_TEST(server.terminate() == 0, server.log_contents());
    std::istringstream log(server.log_contents());
    std::set<std::string> messages;
    for (std::string line; std::getline(log, line);) {
        if (line.starts_with("listening on ")) continue;  // the stdout line, not the log's
        boost::system::error_code ec;
        auto v = json::parse(line, ec);
        BOOST_TEST_REQUIRE(!ec, line);
        const auto& o = v.as_object();
        BOOST_TEST(o.size() == 3u, line);
        BOOST_TEST(o.at("time").as_string().size() == 24u);  // 2026-12-07T01:03:39.864Z
        const std::set<std::string> levels{"debug", "info", "warn", "error"};
        BOOST_TEST(levels.count(std::string(o.at("level").as_string())) == 1u, line);
        messages.insert(std::string(o.at("message").as_string()).substr(0, 17));
    }
    BOOST_TEST(messages.count("buzzer listening ") == 1u);
    BOOST_TEST(messages.count("buzzer stopped") == 1u);

    server_process quiet{server_options{.args = {"--log-level", "warn"}}};
    BOOST_TEST(quiet.terminate() == 0);
    BOOST_TEST(quiet.log_contents().find(" info ") == std::string::npos, quiet.log_contents());

    auto bad = run_buzzer({"--log-level", "loud"});
    BOOST_TEST(bad.exit_code == 2);
    BOOST_TEST(bad.err.find("--log-level") != std::string::npos, bad.err);
}

BOOST_AUTO_TEST_CASE(the_shipped_configuration_starts_a_server_that_wants_credentials) {
    server_process server{server_options{.args = {"--config", BUZZER_DEFAULT_CONFIG}}};
    http_client client{server.port()};
    BOOST_TEST(client.get("/healthz").status == 200);
    BOOST_TEST(client.post_json("/operations", R"({"kind":"echo","input":1})").status == 401);
}

BOOST_AUTO_TEST_CASE(the_systemd_unit_passes_systemd_analyze_verify) {
    std::ifstream in(BUZZER_SERVICE_UNIT);
    std::stringstream text;
    text << in.rdbuf();
    auto unit = text.str();
    for (auto directive :
         {"Type=notify\n", "WatchdogSec=30s\n", "ExecReload=/bin/kill -HUP $MAINPID\n",
          "DynamicUser=yes\n", "StateDirectory=buzzer\n", "ProtectSystem=strict\n",
          "NoNewPrivileges=yes\n", "PrivateTmp=yes\n",
          "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX\n",
          "SystemCallFilter=@system-service\n"})
        BOOST_TEST(unit.find(directive) != std::string::npos, directive);
    // Verified with the built binary in the place of the installed one, which verify checks.
    const std::string installed = "ExecStart=/usr/bin/buzzer ";
    const auto at = unit.find(installed);
    BOOST_TEST_REQUIRE(at != std::string::npos);
    unit.replace(at, installed.size(),
                 "ExecStart=" + std::filesystem::absolute(buzzer_binary()).string() + " ");
    temp_dir dir;
    auto file = dir.write_file("buzzer.service", unit);
    auto r = run_process("/usr/bin/systemd-analyze", {"verify", file.string()});
    BOOST_TEST(r.exit_code == 0, r.err);
    BOOST_TEST(r.err.empty(), r.err);
}

BOOST_AUTO_TEST_CASE(the_man_page_has_every_flag_of_help) {
    std::ifstream in(BUZZER_MAN_PAGE);
    std::stringstream text;
    text << in.rdbuf();
    const auto page = text.str();
    BOOST_TEST_REQUIRE(page.starts_with(".TH BUZZER 1 "));
    // roff writes a dash of an option as \-: "--log-format" is "\-\-log\-format" there.
    auto help = run_buzzer({"--help"});
    BOOST_TEST_REQUIRE(help.exit_code == 0);
    std::size_t flags = 0;
    for (std::size_t at = help.out.find("  --"); at != std::string::npos;
         at = help.out.find("  --", at + 1)) {
        auto end = help.out.find_first_of(" \n", at + 2);
        std::string roff;
        for (char c : help.out.substr(at + 2, end - at - 2))
            roff += c == '-' ? "\\-" : std::string(1, c);
        ++flags;
        BOOST_TEST(page.find(roff) != std::string::npos, roff << " is not in the man page");
    }
    BOOST_TEST(flags > 20u);
}

// Total memory and swap in KiB, from /proc/meminfo.
long long memory_and_swap_kib() {
    std::ifstream f("/proc/meminfo");
    long long total = 0;
    for (std::string line; std::getline(f, line);)
        if (line.starts_with("MemTotal:") || line.starts_with("SwapTotal:"))
            total += std::stoll(line.substr(line.find(':') + 1));
    return total;
}

BOOST_AUTO_TEST_CASE(io_threads_that_cannot_start_exit_1_with_a_message_not_a_terminate) {
    // Threads get stacks of the stack limit's size: one larger than memory and swap together
    // cannot be had, unless the kernel is told to overcommit anything.
    std::string overcommit;
    std::ifstream("/proc/sys/vm/overcommit_memory") >> overcommit;
    if (overcommit == "1") {
        BOOST_TEST_MESSAGE("skipped: vm.overcommit_memory is 1, every stack can be had");
        return;
    }
    temp_dir dir;
    const auto stack_kib = std::to_string(4 * memory_and_swap_kib());
    auto r = run_process("/bin/sh",
                         {"-c", "ulimit -s " + stack_kib + " || exit 77; exec \"$0\" \"$@\"",
                          buzzer_binary().string(), "--threads", "4", "--listen", "127.0.0.1:0",
                          "--database", (dir / "b.db").string()},
                         20s);
    if (r.exit_code == 77) {
        BOOST_TEST_MESSAGE("skipped: cannot raise the stack limit: " << r.err);
        return;
    }
    BOOST_TEST(r.exit_code == 1, r.err);
    BOOST_TEST(r.err == "buzzer: cannot start 4 I/O threads: Resource temporarily unavailable\n");
    BOOST_TEST(r.out.empty(), r.out);  // not listening
}

BOOST_AUTO_TEST_CASE(failures_to_start_after_the_io_threads_exit_1_with_a_message) {
    // The I/O threads are running by then: they are stopped and joined, not left to terminate().
    temp_dir dir;
    auto r = run_buzzer({"--threads", "4", "--listen", "127.0.0.1:0", "--database",
                         (dir / "no-such-dir" / "b.db").string()});
    BOOST_TEST(r.exit_code == 1, r.err);
    BOOST_TEST(r.err.starts_with("buzzer: cannot open database "), r.err);
    BOOST_TEST(r.err.find("terminate") == std::string::npos, r.err);
    server_process first;
    r = run_buzzer({"--threads", "4", "--listen", "127.0.0.1:" + std::to_string(first.port()),
                    "--database", (dir / "b.db").string()});
    BOOST_TEST(r.exit_code == 1, r.err);
    BOOST_TEST(r.err.find("cannot listen on 127.0.0.1:" + std::to_string(first.port()) +
                          ": Address already in use") != std::string::npos,
               r.err);
    BOOST_TEST(r.err.find("terminate") == std::string::npos, r.err);
}

// How many times `needle` occurs in `text`.
std::size_t occurrences(const std::string& text, const std::string& needle) {
    std::size_t n = 0;
    for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
    return n;
}

BOOST_AUTO_TEST_CASE(connections_past_max_connections_are_closed_counted_and_logged_once) {
    temp_dir dir;
    auto config = dir.write_file("buzzer.json", R"({"max_connections": 5})");
    // The flag overrides the file: two connections at most.
    server_process server{server_options{
        .args = {"--config", config.string(), "--max-connections", "2", "--threads", "2"}}};
    http_client kept(server.port());
    BOOST_TEST_REQUIRE(kept.get("/healthz").status == 200);
    auto second = raw_connect(server.port());
    BOOST_TEST_REQUIRE(
        wait_until([&] { return metric(kept, "buzzer_http_connections") == 2; }, 10s),
        "open connections: " << metric(kept, "buzzer_http_connections"));
    BOOST_TEST(metric(kept, "buzzer_http_connections_refused_total") == 0);

    // A third is accepted by the kernel, then closed by the server without a byte.
    for (int i = 0; i < 4; ++i) {
        auto third = raw_connect(server.port());
        (void)third.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        auto got = third.receive_until_close(10s);
        BOOST_TEST(third.closed());
        BOOST_TEST(got.empty(), got);
    }
    // Counted by the thread that closed them, which may come to it after the client saw it.
    BOOST_TEST(
        wait_until([&] { return metric(kept, "buzzer_http_connections_refused_total") == 4; }, 5s),
        "refused: " << metric(kept, "buzzer_http_connections_refused_total"));
    // One line for the burst, not one per connection.
    BOOST_TEST(
        wait_until([&] { return occurrences(server.log_contents(), "max_connections") > 0; }, 5s));
    auto log = server.log_contents();
    BOOST_TEST(occurrences(log, "max_connections (2) reached") == 1u, log);
    BOOST_TEST(occurrences(log, "1 new connection closed since the last report") == 1u, log);

    // A slot that frees up is taken again.
    second.close();
    BOOST_TEST_REQUIRE(
        wait_until([&] { return metric(kept, "buzzer_http_connections") == 1; }, 10s));
    http_client other(server.port());
    BOOST_TEST(other.get("/healthz").status == 200);
    BOOST_TEST(metric(kept, "buzzer_http_connections_refused_total") == 4);
}

BOOST_AUTO_TEST_CASE(a_client_that_stops_reading_is_cut_off_after_the_write_timeout) {
    server_process server{server_options{.args = {"--write-timeout", "1"}}};
    http_client c(server.port());
    // A result of 900 KB, asked for 20 times in one go by a client that reads none of it:
    // 18 MB that no socket buffer holds, so a write waits, past the timeout of 1 s (30 s
    // by default).
    auto id = submit(c, R"({"kind":"echo","input":")" + std::string(900 * 1024, 'x') + R"("})");
    wait_for_status(c, id, "succeeded");
    auto stalled = raw_connect(server.port());
    std::string requests;
    for (int i = 0; i < 20; ++i)
        requests += "GET /operations/" + id + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    BOOST_TEST_REQUIRE(!stalled.send(requests));
    BOOST_TEST_REQUIRE(wait_until([&] { return metric(c, "buzzer_http_connections") == 2; }, 5s));
    auto const start = std::chrono::steady_clock::now();
    BOOST_TEST(wait_until([&] { return metric(c, "buzzer_http_connections") == 1; }, 15s),
               "the connection that reads nothing is still open");
    BOOST_TEST(seconds_since(start) < 10.0);
}

BOOST_AUTO_TEST_CASE(help_lists_the_stable_flags) {
    auto r = run_buzzer({"--help"});
    BOOST_TEST(r.exit_code == 0);
    for (auto flag : {"--listen", "--database", "--config", "--threads", "--tls-cert", "--auth"})
        BOOST_TEST(r.out.find(flag) != std::string::npos);
    BOOST_TEST(r.out.find("buzzer keys create|list|revoke") != std::string::npos, r.out);
    auto keys = run_buzzer({"keys", "--help"});
    BOOST_TEST(keys.exit_code == 0);
    BOOST_TEST(keys.out.find("buzzer keys revoke --database FILE|URI ID") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(version_names_the_build_its_commit_and_its_libraries) {
    auto r = run_buzzer({"--version"});
    BOOST_TEST(r.exit_code == 0);
    static const std::regex text(
        "buzzer [0-9]+\\.[0-9]+\\.[0-9]+ \\(commit ([0-9a-f]{12}\\+?|unknown)\\)\n"
        "build: [A-Za-z]+ [a-z0-9_]+( sanitize=[a-z,]+)?, (GCC|clang) [^\n]+\n"
        "libraries: SQLite 3\\.[0-9.]+, OpenSSL 3\\.[0-9.]+, libpq [0-9]+\\.[0-9]+, "
        "Boost 1\\.81\\.0(, mimalloc 2\\.[0-9.]+)?\n");
    BOOST_TEST(std::regex_match(r.out, text), r.out);
}

namespace {

// A datagram socket in a temporary directory, standing in for systemd's notification socket.
class notify_socket {
  public:
    notify_socket() : path_((dir_.path() / "notify").string()) {
        fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::strncpy(addr.sun_path, path_.c_str(), sizeof(addr.sun_path) - 1);
        BOOST_REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
    }
    ~notify_socket() { ::close(fd_); }
    const std::string& path() const { return path_; }
    // The next state sent other than WATCHDOG=1 (which are counted), or "" at the deadline.
    std::string next(std::chrono::milliseconds deadline) {
        const auto until = std::chrono::steady_clock::now() + deadline;
        for (;;) {
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                until - std::chrono::steady_clock::now());
            pollfd p{fd_, POLLIN, 0};
            if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) != 1) return "";
            char buf[4096];
            const auto n = ::recv(fd_, buf, sizeof buf, 0);
            if (n <= 0) return "";
            std::string state(buf, static_cast<std::size_t>(n));
            if (state != "WATCHDOG=1") return state;
            ++watchdogs;
        }
    }
    int watchdogs = 0;

  private:
    temp_dir dir_;
    std::string path_;
    int fd_ = -1;
};

}  // namespace

BOOST_AUTO_TEST_CASE(a_service_manager_hears_ready_watchdog_reloading_and_stopping) {
    notify_socket manager;
    server_options o;
    o.env = {{"NOTIFY_SOCKET", manager.path()}, {"WATCHDOG_USEC", "300000"}};
    server_process server(o);
    BOOST_TEST(manager.next(5s) ==
               "READY=1\nSTATUS=listening on 127.0.0.1:" + std::to_string(server.port()));
    // WATCHDOG=1 every 150 ms while the event loops answer.
    BOOST_TEST(manager.next(1s).empty());
    BOOST_TEST(manager.watchdogs >= 3);
    ::kill(server.pid(), SIGHUP);
    const auto reloading = manager.next(5s);
    BOOST_TEST(std::regex_match(reloading, std::regex("RELOADING=1\nMONOTONIC_USEC=[0-9]+")),
               reloading);
    BOOST_TEST(manager.next(5s) == "READY=1");
    BOOST_TEST(server.terminate() == 0);
    BOOST_TEST(manager.next(5s) == "STOPPING=1");
}

BOOST_AUTO_TEST_CASE(job_commands_do_not_inherit_the_service_managers_socket) {
    // A job that would write to NOTIFY_SOCKET could tell systemd the server is ready or
    // stopping: the server takes the variables out of its environment before any job starts.
    notify_socket manager;
    temp_dir dir;
    auto config = dir.write_file("buzzer.json", R"({"kinds": {"environ": {"exec": {"argv":
        ["/bin/sh", "-c", "echo \"{\\\"result\\\": \\\"${NOTIFY_SOCKET-none} ${WATCHDOG_USEC-none} ${WATCHDOG_PID-none} ${BUZZER_TEST_MARK-none}\\\"}\""]}}}})");
    server_options o;
    o.args = {"--config", config.string()};
    o.env = {{"NOTIFY_SOCKET", manager.path()},
             {"WATCHDOG_USEC", "300000"},
             {"BUZZER_TEST_MARK", "kept"}};
    server_process server(o);
    BOOST_TEST(manager.next(5s).starts_with("READY=1"));
    http_client client(server.port());
    const auto id = submit(client, R"({"kind":"environ"})");
    wait_for_status(client, id, "succeeded");
    auto result = client.get("/operations/" + id);
    // The rest of the environment reaches the command.
    BOOST_TEST(result.body == "\"none none none kept\"", result.body);
}

BOOST_AUTO_TEST_CASE(help_shows_each_flag_with_its_range_default_and_config_key) {
    auto r = run_buzzer({"--help"});
    BOOST_TEST(r.exit_code == 0);
    // Program_options wraps lines: compare with the white space runs made single spaces.
    std::string text;
    for (char c : r.out)
        if (c != ' ' && c != '\n')
            text += c;
        else if (!text.empty() && text.back() != ' ')
            text += ' ';
    for (auto line : {"--max-running N operations running at once (an integer from 1 to 1000000; "
                      "default 256; config key max_running)",
                      "--header-timeout S seconds to receive a request's headers (a number from "
                      "0.1 to 3600; default 10; config key header_timeout_s)",
                      "--synchronous MODE SQLite synchronous mode (full or normal; default full; "
                      "config key synchronous)",
                      "--no-builtin-kinds do not register the sleep, echo and fail kinds (config "
                      "key builtin_kinds: true or false, default true)"})
        BOOST_TEST(text.find(line) != std::string::npos, line << " not in:\n" << r.out);
}

// A command that ignores SIGTERM (and so does its background child), reporting both pids.
constexpr std::string_view stubborn_script = R"sh(trap '' TERM
sleep 100 &
until [ "$(cat /proc/$!/comm)" = sleep ]; do :; done
echo "{\"progress\": {\"percent\": 1, \"message\": \"$$ $!\"}}"
wait
)sh";

// The two pids the stubborn command reported as its progress message.
std::pair<pid_t, pid_t> reported_pids(http_client& c, const std::string& id) {
    std::string message;
    bool ok = wait_until(
        [&] {
            auto op = status_of(c, id);
            const auto* p = op.if_contains("progress");
            if (p && p->is_object()) message = str(p->as_object(), "message");
            return !message.empty();
        },
        10s);
    BOOST_TEST_REQUIRE(ok, "no progress from the command");
    std::istringstream in(message);
    pid_t a = 0, b = 0;
    in >> a >> b;
    BOOST_TEST_REQUIRE((a > 0 && b > 0), message);
    BOOST_TEST_REQUIRE(process_running(a));
    BOOST_TEST_REQUIRE(process_running(b));
    return {a, b};
}

BOOST_AUTO_TEST_CASE(exec_commands_that_fail_ignore_sigterm_or_flood_stdout) {
    temp_dir dir;
    auto stubborn = dir.write_file("stubborn.sh", stubborn_script);
    auto config = dir.write_file("buzzer.json", R"({"kinds": {
        "stubborn": {"exec": {"argv": ["/bin/sh", ")" +
                                                    stubborn.string() + R"("], "kill_grace_s": 1},
                     "timeout_s": 60, "max_attempts": 1},
        "stubborn_timeout": {"exec": {"argv": ["/bin/sh", ")" +
                                                    stubborn.string() + R"("], "kill_grace_s": 1},
                     "timeout_s": 1.5, "max_attempts": 1},
        "missing": {"exec": {"argv": ["/nonexistent/buzzer-command", "--fast"]}, "max_attempts": 1},
        "garbage": {"exec": {"argv": ["/bin/sh", "-c",
            "echo starting; echo '[1]'; echo '{\"result\": '; printf '\\377\\n'; echo '{\"result\": 42}'"]},
            "max_attempts": 1},
        "flood": {"exec": {"argv": ["/bin/sh", "-c", "yes 'not json at all'"]}, "max_attempts": 1}
    }})");
    // Under AddressSanitizer, freed memory waits in a quarantine (256 MiB by default) that
    // would hide what the RSS check below looks for.
    const char* asan = std::getenv("ASAN_OPTIONS");
    std::string const asan_options =
        std::string(asan ? asan : "") + (asan && *asan ? ":" : "") + "quarantine_size_mb=4";
    server_process server{server_options{.args = {"--config", config.string()},
                                         .env = {{"ASAN_OPTIONS", asan_options}}}};
    http_client client{server.port()};

    BOOST_TEST_CONTEXT("a command that does not exist") {
        auto id = submit(client, R"({"kind":"missing"})");
        auto op = wait_for_status(client, id, "failed");
        BOOST_TEST(detail_of(op.at("error").as_object()) ==
                   "cannot run /nonexistent/buzzer-command: No such file or directory");
    }
    BOOST_TEST_CONTEXT("stdout lines that are not JSON objects") {
        auto id = submit(client, R"({"kind":"garbage"})");
        wait_for_status(client, id, "succeeded");
        BOOST_TEST(client.get("/operations/" + id).body == "42");
    }
    BOOST_TEST_CONTEXT("gigabytes of stdout") {
        auto const rss_before = status_kib(server.pid(), "VmRSS");
        auto const start = std::chrono::steady_clock::now();
        auto id = submit(client, R"({"kind":"flood"})");
        auto op = wait_for_status(client, id, "failed");
        BOOST_TEST(detail_of(op.at("error").as_object()) == "output exceeds 16777216 bytes");
        BOOST_TEST(seconds_since(start) < 15.0);
        // What was read went by line by line; the server kept none of it.
        auto const rss_after = status_kib(server.pid(), "VmRSS");
        BOOST_TEST_MESSAGE("server RSS " << rss_before << " KiB -> " << rss_after << " KiB");
        BOOST_TEST(rss_after - rss_before < 100 * 1024);
    }
    BOOST_TEST_CONTEXT("cancel of a command that ignores SIGTERM") {
        auto id = submit(client, R"({"kind":"stubborn"})");
        auto [child, grandchild] = reported_pids(client, id);
        auto const asked = std::chrono::steady_clock::now();
        BOOST_TEST(client.post_json("/operations/" + id + "/cancel", "").status == 202);
        first_terminal(client, id, [&](const json::object& op) {
            // Canceled only once the whole group is gone: SIGKILL after the grace of 1 s.
            BOOST_TEST(!process_running(child));
            BOOST_TEST(!process_running(grandchild));
            BOOST_TEST(str(op, "status") == "canceled");
            BOOST_TEST(seconds_since(asked) >= 0.9);
        });
    }
    BOOST_TEST_CONTEXT("timeout of a command that ignores SIGTERM") {
        auto id = submit(client, R"({"kind":"stubborn_timeout"})");
        auto [child, grandchild] = reported_pids(client, id);
        auto const seen = std::chrono::steady_clock::now();
        first_terminal(client, id, [&](const json::object& op) {
            BOOST_TEST(!process_running(child));
            BOOST_TEST(!process_running(grandchild));
            BOOST_TEST(str(op, "status") == "failed");
            BOOST_TEST(str(op.at("error").as_object(), "type") == "/problems/timeout");
            // 1.5 s of timeout, then 1 s of grace after the SIGTERM that the command ignores.
            BOOST_TEST(seconds_since(seen) >= 2.0);
        });
    }
    BOOST_TEST(client.get("/healthz").status == 200);
}

BOOST_AUTO_TEST_CASE(commands_left_running_by_a_killed_server_are_ended_at_its_restart) {
    temp_dir dir;
    auto db = dir / "orphans.db";
    auto pidfile = dir / "grandchild.pid";
    // The shell is the command's process; the sleep it starts is a grandchild of the server,
    // which PR_SET_PDEATHSIG does not cover.
    auto config =
        dir.write_file("buzzer.json", R"({"kinds": {"spawner": {"exec": {"argv":
        ["/bin/sh", "-c", "sleep 300 & echo $! > )" +
                                          pidfile.string() + R"(.tmp; mv )" + pidfile.string() +
                                          R"(.tmp )" + pidfile.string() + R"(; wait"]},
        "max_attempts": 1}}})");
    pid_t grandchild = 0;
    std::string id;
    {
        server_process server{
            server_options{.database = db, .args = {"--config", config.string()}}};
        http_client client{server.port()};
        id = submit(client, R"({"kind":"spawner"})");
        wait_for_status(client, id, "running");
        BOOST_TEST_REQUIRE(wait_until([&] { return std::filesystem::exists(pidfile); }, 10s, 10ms),
                           "the command did not write " << pidfile);
        std::ifstream(pidfile) >> grandchild;
        BOOST_TEST_REQUIRE(grandchild > 1);
        server.kill9();
    }
    struct reap_guard {
        pid_t& pid;
        ~reap_guard() {
            if (pid > 1) ::kill(pid, SIGKILL);
        }
    } guard{grandchild};
    BOOST_TEST_REQUIRE(process_running(grandchild));  // it outlived the server

    server_process server{server_options{.database = db, .args = {"--config", config.string()}}};
    http_client client{server.port()};
    BOOST_TEST(wait_until([&] { return !process_running(grandchild); }, 10s, 10ms),
               "the leftover process " << grandchild << " still runs");
    // Its attempt was the last one: abandoned.
    auto op = wait_for_status(client, id, "failed");
    BOOST_TEST(op.at("error").as_object().at("type").as_string() == "/problems/abandoned");
}

BOOST_AUTO_TEST_CASE(http_upstreams_that_hang_redirect_break_flood_or_refuse) {
    upstream_server up;
    temp_dir dir;
    auto kind = [&](const std::string& name, const std::string& path, const std::string& rest) {
        return "\"" + name + "\": {\"http\": {\"url\": \"" + up.url(path) +
               "\"}, \"backoff_base_s\": 0.05, \"backoff_max_s\": 0.1, " + rest + "}";
    };
    auto config = dir.write_file(
        "buzzer.json",
        "{\"kinds\": {" + kind("hang", "/hang", R"("timeout_s": 0.5, "max_attempts": 2)") + ", " +
            kind("redirect", "/redirect", R"("max_attempts": 3)") + ", " +
            kind("truncated", "/truncated", R"("max_attempts": 2)") + ", " +
            kind("huge", "/huge", R"("max_attempts": 1, "timeout_s": 60)") + ", " +
            kind("missing", "/missing", R"("max_attempts": 3)") + ", " +
            kind("unavailable", "/unavailable", R"("max_attempts": 2)") + ", " +
            kind("report", "/report",
                 R"("timeout_s": 7, "max_attempts": 4, "concurrency": 3, "priority": 9)") +
            "}}");
    server_process server{server_options{.args = {"--config", config.string()}}};
    http_client client{server.port()};

    BOOST_TEST_CONTEXT("GET /kinds") {
        auto kinds = client.get("/kinds");
        BOOST_TEST_REQUIRE(kinds.status == 200);
        std::map<std::string, json::object> by_name;
        for (const auto& k : kinds.json().as_object().at("kinds").as_array())
            by_name[str(k.as_object(), "name")] = k.as_object();
        for (auto name : {"hang", "redirect", "truncated", "huge", "missing", "unavailable",
                          "report", "sleep", "echo", "fail"})
            BOOST_TEST(by_name.count(name) == 1u, name);
        auto report = by_name["report"];
        BOOST_TEST(str(report, "executor") == "http");
        BOOST_TEST(report.at("timeout_s").to_number<double>() == 7.0);
        BOOST_TEST(report.at("max_attempts").to_number<double>() == 4.0);
        BOOST_TEST(report.at("concurrency").to_number<double>() == 3.0);
        BOOST_TEST(report.at("priority").to_number<double>() == 9.0);
        BOOST_TEST(by_name["hang"].at("timeout_s").to_number<double>() == 0.5);
        BOOST_TEST(str(by_name["sleep"], "executor") != "http");
    }
    BOOST_TEST_CONTEXT("an answer") {
        auto id = submit(client, R"({"kind":"report","input":{"q":3}})");
        wait_for_status(client, id, "succeeded");
        BOOST_TEST(client.get("/operations/" + id).json() == json::parse(R"({"q":3})"));
    }
    BOOST_TEST_CONTEXT("an upstream that hangs: the timeout fails the attempt, which is retried") {
        auto id = submit(client, R"({"kind":"hang"})");
        auto op = wait_for_status(client, id, "failed");
        BOOST_TEST(str(op.at("error").as_object(), "type") == "/problems/timeout");
        BOOST_TEST(op.at("attempt").as_int64() == 2);
        BOOST_TEST(up.requests("/hang") == 2);
    }
    BOOST_TEST_CONTEXT("a redirect fails the operation at once and is not followed") {
        auto id = submit(client, R"({"kind":"redirect"})");
        auto op = wait_for_status(client, id, "failed");
        BOOST_TEST(op.at("attempt").as_int64() == 1);
        auto detail = detail_of(op.at("error").as_object());
        BOOST_TEST(detail.find("302") != std::string::npos, detail);
        BOOST_TEST(detail.find("not followed") != std::string::npos, detail);
        BOOST_TEST(up.requests("/redirect") == 1);
    }
    BOOST_TEST_CONTEXT("an upstream that closes in the middle of its body: retried") {
        auto id = submit(client, R"({"kind":"truncated"})");
        auto op = wait_for_status(client, id, "failed");
        BOOST_TEST(op.at("attempt").as_int64() == 2);
        BOOST_TEST(detail_of(op.at("error").as_object()) ==
                   "upstream closed the connection in the middle of its answer");
    }
    BOOST_TEST_CONTEXT("a 4xx fails the operation at once, quoting status and body") {
        auto id = submit(client, R"({"kind":"missing"})");
        auto op = wait_for_status(client, id, "failed");
        BOOST_TEST(op.at("attempt").as_int64() == 1);
        BOOST_TEST(detail_of(op.at("error").as_object()) ==
                   "upstream answered 404: no such report");
        BOOST_TEST(up.requests("/missing") == 1);
    }
    BOOST_TEST_CONTEXT("a 5xx is retried") {
        auto id = submit(client, R"({"kind":"unavailable"})");
        auto op = wait_for_status(client, id, "failed");
        BOOST_TEST(op.at("attempt").as_int64() == 2);
        BOOST_TEST(detail_of(op.at("error").as_object()) == "upstream answered 503: overloaded");
        BOOST_TEST(up.requests("/unavailable") == 2);
    }
    BOOST_TEST_CONTEXT("a 1 GiB answer stops at the 16 MiB bound") {
        auto const start = std::chrono::steady_clock::now();
        auto id = submit(client, R"({"kind":"huge"})");
        auto op = wait_for_status(client, id, "failed");
        BOOST_TEST(detail_of(op.at("error").as_object()) ==
                   "upstream response body exceeds max_body (16777216 bytes)");
        BOOST_TEST(seconds_since(start) < 20.0);
        BOOST_TEST(up.huge_bytes_sent.load() < (1LL << 30));
        BOOST_TEST_MESSAGE("server peak RSS " << status_kib(server.pid(), "VmHWM") << " KiB");
    }
    BOOST_TEST(client.get("/healthz").status == 200);
}
