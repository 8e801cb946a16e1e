// buzzer-bench: a coroutine HTTP/1.1 load generator for Buzzer's API. Modes healthz, submit,
// e2e, sse-idle and sse-latency; bench/README.md says exactly what each one measures.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/concurrent_channel.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <boost/program_options.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

namespace buzzer::bench {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
namespace json = boost::json;
namespace po = boost::program_options;
using tcp = asio::ip::tcp;
using steady = std::chrono::steady_clock;
using error_code = boost::system::error_code;
using namespace std::chrono_literals;
constexpr auto tuple_awaitable = asio::as_tuple(asio::use_awaitable);

// Deadline of one ordinary request/response exchange.
constexpr auto io_timeout = 30s;
// Deadline of one `Prefer: wait=60` exchange.
constexpr auto e2e_timeout = 75s;
// At most this many operation ids per GET /events (the server's limit).
constexpr std::size_t max_ids_per_stream = 100;
// Sampled operations looked up after the submit phase.
constexpr std::size_t max_samples = 5000;
constexpr double nan = std::numeric_limits<double>::quiet_NaN();

// A command-line mistake: printed with the usage, exit status 2.
struct usage_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// What the command line asked for.
struct settings {
    std::vector<std::string> modes;
    std::string url;
    std::string spawn;
    std::vector<std::string> server_args;
    pid_t server_pid = 0;
    unsigned connections = 64;
    double duration = 10;
    unsigned threads = 1;
    unsigned streams = 1000;
    double rate = 1000;
    unsigned subscribers = 100;
    double sleep_ms = 0;
    double drain_timeout = 120;
    unsigned sample_every = 10;
    std::string kind = "echo";
    unsigned idle_streams = 0;
    unsigned ops = 10;
};

// Where the server listens: a loopback endpoint and the Host header that names it.
struct target {
    tcp::endpoint endpoint;
    std::string host;
};

// Parses http://HOST:PORT (an optional trailing slash); HOST must be a loopback address.
target parse_url(const std::string& url) {
    constexpr std::string_view scheme = "http://";
    if (url.rfind(scheme, 0) != 0) throw usage_error("--url must start with http://");
    std::string rest = url.substr(scheme.size());
    if (auto slash = rest.find('/'); slash != std::string::npos) {
        if (rest.substr(slash) != "/") throw usage_error("--url must not have a path");
        rest.resize(slash);
    }
    std::string host;
    std::string port;
    if (!rest.empty() && rest.front() == '[') {
        auto close = rest.find(']');
        if (close == std::string::npos || close + 1 >= rest.size() || rest[close + 1] != ':')
            throw usage_error("--url: expected http://[IPV6]:PORT");
        host = rest.substr(1, close - 1);
        port = rest.substr(close + 2);
    } else {
        auto colon = rest.rfind(':');
        if (colon == std::string::npos) throw usage_error("--url needs an explicit port");
        host = rest.substr(0, colon);
        port = rest.substr(colon + 1);
    }
    if (host == "localhost") host = "127.0.0.1";
    error_code ec;
    auto address = asio::ip::make_address(host, ec);
    if (ec) throw usage_error("--url: the host must be an IP address or localhost");
    if (!address.is_loopback()) throw usage_error("--url: only loopback addresses are allowed");
    char* end = nullptr;
    unsigned long number = std::strtoul(port.c_str(), &end, 10);
    if (port.empty() || *end != '\0' || number == 0 || number > 65535)
        throw usage_error("--url: bad port '" + port + "'");
    return {tcp::endpoint(address, static_cast<unsigned short>(number)), rest};
}

// ---------------------------------------------------------------------------------------------
// Measurements

// Latency samples; percentiles by the nearest-rank method.
struct latency {
    std::vector<std::int64_t> ns;

    void add(steady::duration d) {
        ns.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(d).count());
    }
    void add_ms(double ms) { ns.push_back(static_cast<std::int64_t>(ms * 1e6)); }
    void merge(latency& other) {
        ns.insert(ns.end(), other.ns.begin(), other.ns.end());
        other.ns.clear();
    }
    void sort() { std::sort(ns.begin(), ns.end()); }
    // The p-quantile (0..1) in milliseconds of the sorted samples; NaN when there are none.
    [[nodiscard]] double ms(double p) const {
        if (ns.empty()) return nan;
        auto rank = static_cast<std::size_t>(std::ceil(p * static_cast<double>(ns.size())));
        auto index = std::min(ns.size() - 1, rank == 0 ? 0 : rank - 1);
        return static_cast<double>(ns[index]) / 1e6;
    }
};

// Outcome counts of one worker (merged into the phase's after the run).
struct counters {
    std::uint64_t ok = 0;                     // responses with the expected status
    std::map<unsigned, std::uint64_t> other;  // any other status, by code
    std::uint64_t errors = 0;                 // I/O errors and timeouts
    latency lat;                              // of the ok responses

    void merge(counters& o) {
        ok += o.ok;
        for (const auto& [code, n] : o.other) other[code] += n;
        errors += o.errors;
        lat.merge(o.lat);
    }
    [[nodiscard]] std::string describe_other() const {
        std::string s;
        for (const auto& [code, n] : other)
            s += (s.empty() ? "" : ", ") + std::to_string(code) + " x" + std::to_string(n);
        if (errors)
            s += (s.empty() ? "" : ", ") + std::string("I/O errors x") + std::to_string(errors);
        return s.empty() ? "-" : s;
    }
};

// One line of the summary table plus free-form notes.
struct phase_result {
    std::string name;
    std::uint64_t ok = 0;
    double seconds = 0;
    double rate = 0;
    double p50_ms = nan;
    double p99_ms = nan;
    double max_ms = nan;
    std::string other = "-";
    double server_cpu = nan;  // cores used by the server during the phase
    double bench_cpu = nan;   // cores used by this program during the phase
    std::vector<std::string> notes;

    void take_latency(latency& l) {
        l.sort();
        p50_ms = l.ms(0.50);
        p99_ms = l.ms(0.99);
        max_ms = l.ms(1.0);
    }
};

std::string format(const char* fmt, double a, double b = 0, double c = 0, double d = 0) {
    char buf[256];
    std::snprintf(buf, sizeof buf, fmt, a, b, c, d);
    return buf;
}

// A field of /proc/PID/status in KiB ("VmRSS", "VmHWM"), or -1.
long proc_status_kib(pid_t pid, std::string_view key) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(in, line)) {
        if (line.compare(0, key.size(), key) == 0 && line.size() > key.size() &&
            line[key.size()] == ':')
            return std::strtol(line.c_str() + key.size() + 1, nullptr, 10);
    }
    return -1;
}

// User plus system CPU seconds of a process, from /proc/PID/stat; NaN if unreadable.
double process_cpu_seconds(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto paren = all.rfind(')');
    if (paren == std::string::npos) return nan;
    std::istringstream fields(all.substr(paren + 2));
    std::string field;
    double utime = 0;
    double stime = 0;
    // After "pid (comm) " the fields start at number 3 (state); utime is 14, stime 15.
    for (int n = 3; n <= 15 && fields >> field; ++n) {
        if (n == 14) utime = std::strtod(field.c_str(), nullptr);
        if (n == 15) stime = std::strtod(field.c_str(), nullptr);
    }
    return (utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

double self_cpu_seconds() {
    rusage ru{};
    ::getrusage(RUSAGE_SELF, &ru);
    auto secs = [](const timeval& tv) {
        return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6;
    };
    return secs(ru.ru_utime) + secs(ru.ru_stime);
}

// CPU used by the server (when its pid is known) and by the bench over a phase, in cores.
class cpu_meter {
  public:
    explicit cpu_meter(pid_t server)
        : server_(server),
          start_(steady::now()),
          self_(self_cpu_seconds()),
          other_(server ? process_cpu_seconds(server) : nan) {}

    void stop(phase_result& r) const {
        double wall = std::chrono::duration<double>(steady::now() - start_).count();
        r.bench_cpu = (self_cpu_seconds() - self_) / wall;
        if (server_) r.server_cpu = (process_cpu_seconds(server_) - other_) / wall;
    }

  private:
    pid_t server_;
    steady::time_point start_;
    double self_;
    double other_;
};

double system_now_ms() {
    return std::chrono::duration<double, std::milli>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// fdatasync latency of 4 KiB appends to a scratch file in `dir` (200 rounds): p50, p99 in ms.
// The disk is where a submit's time goes when fsync is slow, so each report shows it.
std::pair<double, double> probe_fdatasync(const std::filesystem::path& dir) {
    auto path = dir / "buzzer-bench-fsync-probe";
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return {nan, nan};
    latency l;
    char page[4096] = {};
    for (int i = 0; i < 200; ++i) {
        if (::write(fd, page, sizeof page) != static_cast<ssize_t>(sizeof page)) break;
        auto t0 = steady::now();
        if (::fdatasync(fd) != 0) break;
        l.add(steady::now() - t0);
    }
    ::close(fd);
    ::unlink(path.c_str());
    l.sort();
    return {l.ms(0.5), l.ms(0.99)};
}

// Milliseconds since the epoch of an RFC 3339 UTC time as the server writes it.
std::optional<double> parse_time_ms(std::string_view s) {
    std::string text(s);
    int year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0, millis = 0;
    int n = std::sscanf(text.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d.%3d", &year, &month, &day, &hour,
                        &minute, &second, &millis);
    if (n < 6) return std::nullopt;
    std::tm tm{};
    tm.tm_year = year - 1900;
    tm.tm_mon = month - 1;
    tm.tm_mday = day;
    tm.tm_hour = hour;
    tm.tm_min = minute;
    tm.tm_sec = second;
    return static_cast<double>(::timegm(&tm)) * 1000.0 + millis;
}

// The operation id at the end of a Location "/operations/ID/status" (or "/operations/ID").
std::string id_from_location(std::string_view location) {
    constexpr std::string_view prefix = "/operations/";
    auto at = location.find(prefix);
    if (at == std::string_view::npos) return {};
    auto id = location.substr(at + prefix.size());
    return std::string(id.substr(0, id.find('/')));
}

// A string member of a JSON object, or "".
std::string string_member(const json::value& v, std::string_view key) {
    if (!v.is_object()) return {};
    const auto* p = v.get_object().if_contains(key);
    return p && p->is_string() ? std::string(p->get_string()) : std::string();
}

// ---------------------------------------------------------------------------------------------
// HTTP

// One keep-alive HTTP/1.1 connection with a reusable request and response.
class connection {
  public:
    connection(asio::any_io_executor ex, const target& t) : stream_(std::move(ex)), target_(t) {
        req_.version(11);
        req_.set(bhttp::field::host, target_.host);
        req_.set(bhttp::field::user_agent, "buzzer-bench");
    }

    // Opens the TCP connection (throws on failure).
    asio::awaitable<void> connect() {
        stream_.expires_after(io_timeout);
        co_await stream_.async_connect(target_.endpoint, asio::use_awaitable);
        stream_.socket().set_option(tcp::no_delay(true));
    }

    // Closes and reopens the connection; false if that failed.
    asio::awaitable<bool> reconnect() {
        error_code ignored;
        stream_.socket().close(ignored);
        buffer_.clear();
        stream_.expires_after(io_timeout);
        auto r = co_await stream_.async_connect(target_.endpoint, tuple_awaitable);
        if (std::get<0>(r)) co_return false;
        stream_.socket().set_option(tcp::no_delay(true), ignored);
        co_return true;
    }

    // The request exchange() sends; set method, target, headers and body before.
    bhttp::request<bhttp::string_body>& request() { return req_; }
    // The response exchange() read.
    bhttp::response<bhttp::string_body>& response() { return res_; }
    beast::tcp_stream& stream() { return stream_; }
    beast::flat_buffer& buffer() { return buffer_; }

    // Sets a GET request for `path` with no body.
    void get(const std::string& path) {
        req_.method(bhttp::verb::get);
        req_.target(path);
        req_.body().clear();
        req_.erase(bhttp::field::content_type);
        req_.prepare_payload();
    }

    // Sets a POST request of a JSON body to `path`.
    void post(const std::string& path, std::string body) {
        req_.method(bhttp::verb::post);
        req_.target(path);
        req_.set(bhttp::field::content_type, "application/json");
        req_.body() = std::move(body);
        req_.prepare_payload();
    }

    // Writes request() and reads response(); the error (if any) is returned, not thrown.
    asio::awaitable<error_code> exchange(steady::duration timeout = io_timeout) {
        if (auto ec = co_await send(timeout)) co_return ec;
        res_ = {};
        auto r = co_await bhttp::async_read(stream_, buffer_, res_, tuple_awaitable);
        co_return std::get<0>(r);
    }

    // What exchange_lean() reads of a response.
    struct lean_response {
        unsigned status = 0;
        bool keep_alive = true;
        std::string location;
    };

    // exchange() for the closed loops: the response is read with a minimal parser (status
    // line, Content-Length, Connection, Location; the body is skipped). Beast's parser, with
    // an allocation per header field, cost the bench as much CPU again as the rest of a
    // request, CPU that the server under test then lacked.
    asio::awaitable<error_code> exchange_lean(steady::duration timeout, lean_response& out) {
        if (auto ec = co_await send(timeout)) co_return ec;
        out = {};
        std::size_t head_end = std::string_view::npos;
        std::size_t total = 0;
        for (;;) {
            std::string_view text(static_cast<const char*>(buffer_.data().data()), buffer_.size());
            if (head_end == std::string_view::npos) {
                head_end = text.find("\r\n\r\n");
                if (head_end != std::string_view::npos) {
                    auto length = parse_head(text.substr(0, head_end), out);
                    if (!length) co_return make_error_code(bhttp::error::bad_content_length);
                    total = head_end + 4 + *length;
                } else if (text.size() > 64 * 1024) {
                    co_return make_error_code(bhttp::error::header_limit);
                }
            }
            if (head_end != std::string_view::npos && buffer_.size() >= total) {
                buffer_.consume(total);
                co_return error_code{};
            }
            auto [ec, n] =
                co_await stream_.async_read_some(buffer_.prepare(16 * 1024), tuple_awaitable);
            if (ec) co_return ec;
            buffer_.commit(n);
        }
    }

    // exchange(), then reconnect if the server will close the connection; throws on error.
    asio::awaitable<unsigned> fetch() {
        auto ec = co_await exchange();
        if (ec) throw boost::system::system_error(ec, std::string(req_.target()));
        if (!res_.keep_alive()) co_await reconnect();
        co_return res_.result_int();
    }

  private:
    // Arms the deadline of the exchange and writes req_, written out by hand: Beast's
    // serializer costs more CPU than the rest of a request, and this CPU is taken from the
    // server under test.
    asio::awaitable<error_code> send(steady::duration timeout) {
        wire_.clear();
        wire_.append(req_.method_string()).append(" ").append(req_.target());
        wire_.append(" HTTP/1.1\r\n");
        for (const auto& f : req_)
            wire_.append(f.name_string()).append(": ").append(f.value()).append("\r\n");
        wire_.append("\r\n").append(req_.body());
        stream_.expires_after(timeout);
        auto [ec, n] = co_await asio::async_write(stream_, asio::buffer(wire_), tuple_awaitable);
        co_return ec;
    }

    // Parses a response head (without its blank line); returns the body's length, nullopt if
    // it cannot be told (no Content-Length on a response that has a body).
    static std::optional<std::size_t> parse_head(std::string_view head, lean_response& out) {
        auto eol = head.find("\r\n");
        auto line = head.substr(0, eol);
        if (line.size() < 12 || line.substr(0, 5) != "HTTP/") return std::nullopt;
        out.status = static_cast<unsigned>(std::atoi(std::string(line.substr(9, 3)).c_str()));
        if (line.substr(0, 8) == "HTTP/1.0") out.keep_alive = false;
        std::optional<std::size_t> length;
        if (out.status == 204 || out.status == 304 || out.status < 200) length = 0;
        while (eol != std::string_view::npos) {
            auto start = eol + 2;
            eol = head.find("\r\n", start);
            auto field = head.substr(start, eol == std::string_view::npos ? eol : eol - start);
            auto colon = field.find(':');
            if (colon == std::string_view::npos) continue;
            auto name = field.substr(0, colon);
            auto value = field.substr(colon + 1);
            while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
            if (beast::iequals(name, "content-length"))
                length = static_cast<std::size_t>(
                    std::strtoull(std::string(value).c_str(), nullptr, 10));
            else if (beast::iequals(name, "connection"))
                out.keep_alive = !beast::iequals(value, "close");
            else if (beast::iequals(name, "location"))
                out.location = std::string(value);
            else if (beast::iequals(name, "transfer-encoding"))
                return std::nullopt;  // not sent by the endpoints the loops measure
        }
        return length;
    }

    beast::tcp_stream stream_;
    target target_;
    beast::flat_buffer buffer_;
    bhttp::request<bhttp::string_body> req_;
    bhttp::response<bhttp::string_body> res_;
    std::string wire_;  ///< req_ as sent
};

// The message of an exception; for a system_error without Boost's source location.
std::string describe(std::exception_ptr e) {
    try {
        std::rethrow_exception(std::move(e));
    } catch (const boost::system::system_error& x) {
        return x.code().message();
    } catch (const std::exception& x) {
        return x.what();
    } catch (...) {
        return "unknown exception";
    }
}

// Runs `n` coroutines made by `make(executor, i)` on `threads` threads until all have ended.
// A coroutine that throws is reported on stderr; the others go on. Objects holding I/O objects
// of `io` must be destroyed before it.
template <class Make>
void run_workers(asio::io_context& io, unsigned threads, std::size_t n, Make make) {
    std::atomic<std::size_t> failed{0};
    for (std::size_t i = 0; i < n; ++i) {
        // A strand per worker only when several threads run them: one thread is an implicit
        // strand, and copies of a plain executor are cheaper.
        auto ex = threads > 1 ? asio::any_io_executor(asio::make_strand(io))
                              : asio::any_io_executor(io.get_executor());
        asio::co_spawn(ex, make(ex, i), [&failed](const std::exception_ptr& e) {
            if (e && failed++ == 0)
                std::cerr << "buzzer-bench: a worker failed: " << describe(e) << "\n";
        });
    }
    std::vector<std::thread> pool;
    for (unsigned t = 1; t < threads; ++t) pool.emplace_back([&io] { io.run(); });
    io.run();
    for (auto& t : pool) t.join();
    if (failed > 1) std::cerr << "buzzer-bench: " << failed << " of " << n << " workers failed\n";
}

// Runs one coroutine to completion on the calling thread and returns its value.
template <class T>
T run_one(const target& t, asio::awaitable<T> (*fn)(target, std::string), std::string arg) {
    asio::io_context io;
    auto fut = asio::co_spawn(io, fn(t, std::move(arg)), asio::use_future);
    io.run();
    return fut.get();
}

// POSTs `body` to /operations and returns the new operation's id; throws unless 202.
asio::awaitable<std::string> create_operation(target t, std::string body) {
    connection c(co_await asio::this_coro::executor, t);
    co_await c.connect();
    c.post("/operations", std::move(body));
    unsigned status = co_await c.fetch();
    if (status != 202)
        throw std::runtime_error("POST /operations answered " + std::to_string(status) + ": " +
                                 c.response().body());
    co_return id_from_location(c.response()[bhttp::field::location]);
}

// POSTs /operations/ID/cancel; returns the status.
asio::awaitable<unsigned> cancel_operation(target t, std::string id) {
    connection c(co_await asio::this_coro::executor, t);
    co_await c.connect();
    c.post("/operations/" + id + "/cancel", "");
    co_return co_await c.fetch();
}

// GETs `path` and returns the body of a 200 answer, or "" for anything else.
asio::awaitable<std::string> get_text(target t, std::string path) {
    connection c(co_await asio::this_coro::executor, t);
    co_await c.connect();
    c.get(path);
    unsigned status = co_await c.fetch();
    co_return status == 200 ? std::move(c.response().body()) : std::string();
}

// The value of a Prometheus sample line `name value` (no labels) in `text`, or NaN.
double metric_value(std::string_view text, std::string_view name) {
    for (std::size_t at = 0; at < text.size();) {
        auto eol = std::min(text.find('\n', at), text.size());
        auto line = text.substr(at, eol - at);
        if (line.size() > name.size() && line.substr(0, name.size()) == name &&
            line[name.size()] == ' ')
            return std::strtod(std::string(line.substr(name.size() + 1)).c_str(), nullptr);
        at = eol + 1;
    }
    return nan;
}

// The server's group-commit counters, from GET /metrics (NaN when it has none).
struct store_counters {
    double commits = nan;
    double writes = nan;

    static store_counters read(const target& t) {
        store_counters c;
        try {
            auto text = run_one<std::string>(t, get_text, "/metrics");
            c.commits = metric_value(text, "buzzer_store_commits_total");
            c.writes = metric_value(text, "buzzer_store_writes_total");
        } catch (const std::exception&) {
        }
        return c;
    }
};

// The cumulative buckets (upper bound, count) of histogram `name` in Prometheus text.
std::vector<std::pair<double, double>> histogram_buckets(std::string_view text,
                                                         std::string_view name) {
    std::vector<std::pair<double, double>> out;
    const std::string prefix = std::string(name) + "_bucket{le=\"";
    for (std::size_t at = 0; at < text.size();) {
        auto eol = std::min(text.find('\n', at), text.size());
        auto line = text.substr(at, eol - at);
        at = eol + 1;
        if (line.substr(0, prefix.size()) != prefix) continue;
        auto rest = line.substr(prefix.size());
        auto quote = rest.find('"');
        auto space = rest.rfind(' ');
        if (quote == std::string_view::npos || space == std::string_view::npos) continue;
        std::string le(rest.substr(0, quote));
        double bound = le == "+Inf" ? std::numeric_limits<double>::infinity()
                                    : std::strtod(le.c_str(), nullptr);
        out.emplace_back(bound, std::strtod(std::string(rest.substr(space + 1)).c_str(), nullptr));
    }
    return out;
}

// The histogram of the requests between two scrapes: its count and its q-quantile in
// seconds, interpolated linearly inside the bucket (as Prometheus' histogram_quantile does).
struct histogram_delta {
    std::vector<std::pair<double, double>> before, after;

    double count() const {
        return after.empty() || before.size() != after.size()
                   ? 0
                   : after.back().second - before.back().second;
    }
    double quantile(double q) const {
        double total = count();
        if (total <= 0) return nan;
        double rank = q * total, prev = 0, lower = 0;
        for (std::size_t i = 0; i < after.size(); ++i) {
            double c = after[i].second - before[i].second;
            if (c >= rank) {
                if (std::isinf(after[i].first)) return lower;
                return lower +
                       (after[i].first - lower) * (c > prev ? (rank - prev) / (c - prev) : 1);
            }
            prev = c;
            lower = after[i].first;
        }
        return lower;
    }
};

std::vector<std::pair<double, double>> read_histogram(const target& t, std::string_view name) {
    try {
        return histogram_buckets(run_one<std::string>(t, get_text, "/metrics"), name);
    } catch (const std::exception&) {
        return {};
    }
}

// Polls until no operation is pending or running; returns the seconds waited, or -1 after
// `timeout_s` (passed as text to fit run_one).
asio::awaitable<double> wait_drained(target t, std::string timeout_s) {
    auto start = steady::now();
    auto limit = start + std::chrono::duration_cast<steady::duration>(
                             std::chrono::duration<double>(std::stod(timeout_s)));
    connection c(co_await asio::this_coro::executor, t);
    co_await c.connect();
    asio::steady_timer pause(co_await asio::this_coro::executor);
    for (;;) {
        c.get("/operations?status=pending&status=running&limit=1");
        unsigned status = co_await c.fetch();
        if (status != 200)
            throw std::runtime_error("GET /operations answered " + std::to_string(status));
        auto body = json::parse(c.response().body());
        const auto* ops = body.as_object().if_contains("operations");
        if (ops && ops->is_array() && ops->get_array().empty())
            co_return std::chrono::duration<double>(steady::now() - start).count();
        if (steady::now() > limit) co_return -1.0;
        pause.expires_after(20ms);
        co_await pause.async_wait(asio::use_awaitable);
    }
}

// ---------------------------------------------------------------------------------------------
// healthz, submit, e2e: closed loops, one request at a time per connection

enum class loop_kind { healthz, submit, e2e };

// A submitted operation chosen for the after-the-run lookup.
struct sampled_op {
    std::string id;
    double sent_ms = 0;  // system clock, when the POST was about to be written
};

// One connection looping one kind of request until the deadline.
class closed_loop {
  public:
    closed_loop(asio::any_io_executor ex, const target& t, loop_kind kind, unsigned index,
                steady::time_point deadline, unsigned sample_every, std::string op_kind)
        : conn_(std::move(ex), t),
          kind_(kind),
          op_kind_(std::move(op_kind)),
          index_(index),
          deadline_(deadline),
          sample_every_(sample_every) {}

    counters stats;
    std::vector<sampled_op> samples;

    asio::awaitable<void> run() {
        co_await conn_.connect();
        unsigned expected = 200;
        if (kind_ == loop_kind::healthz) {
            conn_.get("/healthz");
        } else {
            expected = kind_ == loop_kind::submit ? 202 : 303;
            if (kind_ == loop_kind::e2e) conn_.request().set(bhttp::field::prefer, "wait=60");
        }
        auto timeout =
            kind_ == loop_kind::e2e ? steady::duration(e2e_timeout) : steady::duration(io_timeout);
        connection::lean_response res;
        for (std::uint64_t i = 0; steady::now() < deadline_; ++i) {
            if (kind_ != loop_kind::healthz) {
                std::uint64_t n = static_cast<std::uint64_t>(index_) * 100'000'000 + i;
                conn_.post("/operations", R"({"kind":")" + op_kind_ + R"(","input":{"n":)" +
                                              std::to_string(n) + "}}");
            }
            double sent_ms = system_now_ms();
            auto t0 = steady::now();
            auto ec = co_await conn_.exchange_lean(timeout, res);
            auto t1 = steady::now();
            if (ec) {
                ++stats.errors;
                co_await reconnect_until_deadline();
                continue;
            }
            if (res.status == expected) {
                ++stats.ok;
                stats.lat.add(t1 - t0);
                if (kind_ == loop_kind::submit && sample_every_ && i % sample_every_ == 0)
                    samples.push_back({id_from_location(res.location), sent_ms});
            } else {
                ++stats.other[res.status];
            }
            if (!res.keep_alive) co_await reconnect_until_deadline();
        }
    }

  private:
    asio::awaitable<void> reconnect_until_deadline() {
        asio::steady_timer pause(co_await asio::this_coro::executor);
        while (steady::now() < deadline_ && !co_await conn_.reconnect()) {
            pause.expires_after(100ms);
            co_await pause.async_wait(asio::use_awaitable);
        }
    }

    connection conn_;
    loop_kind kind_;
    std::string op_kind_;  // the operations' kind
    unsigned index_;
    steady::time_point deadline_;
    unsigned sample_every_;
};

// Looks up sampled operations: submit → finished_at, and the server's queue wait.
class sample_fetcher {
  public:
    sample_fetcher(asio::any_io_executor ex, const target& t, const std::vector<sampled_op>& ops,
                   std::size_t first, std::size_t step)
        : conn_(std::move(ex), t), ops_(ops), first_(first), step_(step) {}

    latency to_finished;  // POST sent (bench clock) → finished_at (server clock), ms resolution
    latency queue_wait;   // created_at → started_at (server clock)
    std::uint64_t not_succeeded = 0;

    asio::awaitable<void> run() {
        co_await conn_.connect();
        for (std::size_t i = first_; i < ops_.size(); i += step_) {
            conn_.get("/operations/" + ops_[i].id + "/status");
            unsigned status = co_await conn_.fetch();
            if (status != 303) {
                ++not_succeeded;
                continue;
            }
            auto v = json::parse(conn_.response().body());
            auto created = parse_time_ms(string_member(v, "created_at"));
            auto started = parse_time_ms(string_member(v, "started_at"));
            auto finished = parse_time_ms(string_member(v, "finished_at"));
            if (finished) to_finished.add_ms(*finished - ops_[i].sent_ms);
            if (created && started) queue_wait.add_ms(*started - *created);
        }
    }

  private:
    connection conn_;
    const std::vector<sampled_op>& ops_;
    std::size_t first_;
    std::size_t step_;
};

phase_result run_closed_loop(const settings& s, const target& t, pid_t server, loop_kind kind) {
    static constexpr const char* names[] = {"healthz", "submit", "e2e"};
    phase_result r;
    r.name = names[static_cast<int>(kind)];
    if (kind != loop_kind::healthz && s.kind != "echo") r.name += " " + s.kind;
    asio::io_context io(static_cast<int>(s.threads));  // outlives the workers
    std::vector<std::unique_ptr<closed_loop>> workers;
    auto duration =
        std::chrono::duration_cast<steady::duration>(std::chrono::duration<double>(s.duration));
    cpu_meter cpu(server);
    auto start = steady::now();
    auto deadline = start + duration;
    for (unsigned i = 0; i < s.connections; ++i) workers.push_back(nullptr);
    run_workers(io, s.threads, s.connections, [&](const asio::any_io_executor& ex, std::size_t i) {
        workers[i] = std::make_unique<closed_loop>(ex, t, kind, static_cast<unsigned>(i), deadline,
                                                   s.sample_every, s.kind);
        return workers[i]->run();
    });
    r.seconds = std::chrono::duration<double>(steady::now() - start).count();
    cpu.stop(r);

    counters total;
    std::vector<sampled_op> samples;
    for (auto& w : workers) {
        total.merge(w->stats);
        samples.insert(samples.end(), w->samples.begin(), w->samples.end());
    }
    r.ok = total.ok;
    r.rate = static_cast<double>(total.ok) / r.seconds;
    r.other = total.describe_other();
    r.take_latency(total.lat);
    r.notes.push_back(r.name + ": " + std::to_string(s.connections) + " connections, " +
                      std::to_string(s.threads) + " bench thread(s), " +
                      format("%.1f s", s.duration));
    if (kind != loop_kind::submit) return r;

    // How long the server needs to run everything it accepted.
    double drained = run_one<double>(t, wait_drained, std::to_string(s.drain_timeout));
    if (drained < 0) {
        r.notes.push_back(
            format("submit: still pending/running %.0f s after the run", s.drain_timeout));
    } else {
        double all = r.seconds + drained;
        r.notes.push_back(
            format("submit: backlog drained %.2f s after the run; accepted ops "
                   "completed at %.0f ops/s overall (accepted / (run + drain))",
                   drained, static_cast<double>(total.ok) / all));
    }
    // A sample of the accepted operations: when did they succeed, by the server's clock?
    std::vector<sampled_op> picked;
    std::size_t stride = samples.size() / max_samples + 1;
    for (std::size_t i = 0; i < samples.size(); i += stride) picked.push_back(samples[i]);
    if (picked.empty()) return r;
    std::size_t fetchers = std::min<std::size_t>(s.connections, picked.size());
    asio::io_context lookup_io(static_cast<int>(s.threads));  // outlives the lookups
    std::vector<std::unique_ptr<sample_fetcher>> lookups(fetchers);
    run_workers(lookup_io, s.threads, fetchers,
                [&](const asio::any_io_executor& ex, std::size_t i) {
                    lookups[i] = std::make_unique<sample_fetcher>(ex, t, picked, i, fetchers);
                    return lookups[i]->run();
                });
    latency to_finished;
    latency queue_wait;
    std::uint64_t not_succeeded = 0;
    for (auto& l : lookups) {
        to_finished.merge(l->to_finished);
        queue_wait.merge(l->queue_wait);
        not_succeeded += l->not_succeeded;
    }
    to_finished.sort();
    queue_wait.sort();
    r.notes.push_back(
        "submit: " + std::to_string(picked.size()) + " sampled ops (" +
        std::to_string(not_succeeded) + " not succeeded): POST sent -> finished_at " +
        format("p50 %.0f ms, p99 %.0f ms; created_at -> started_at p50 %.0f ms, p99 %.0f ms",
               to_finished.ms(0.5), to_finished.ms(0.99), queue_wait.ms(0.5), queue_wait.ms(0.99)));
    return r;
}

// ---------------------------------------------------------------------------------------------
// sse-idle: many open, idle event streams

// Opens idle streams, taking the next index from a shared counter, until all are open.
class idle_opener {
  public:
    idle_opener(asio::any_io_executor ex, const target& t, std::string request,
                std::atomic<std::size_t>& next, std::vector<std::optional<tcp::socket>>& slots)
        : ex_(std::move(ex)),
          target_(t),
          request_(std::move(request)),
          next_(next),
          slots_(slots) {}

    std::uint64_t failed = 0;
    latency first_bytes;  // connect → the stream's `retry:` line received

    asio::awaitable<void> run() {
        for (std::size_t i = next_++; i < slots_.size(); i = next_++) {
            try {
                co_await open(i);
            } catch (...) {
                if (failed++ == 0)
                    std::cerr << "buzzer-bench: stream " << i << ": "
                              << describe(std::current_exception()) << "\n";
            }
        }
    }

  private:
    asio::awaitable<void> open(std::size_t i) {
        beast::tcp_stream s(ex_);
        s.expires_after(10s);
        auto t0 = steady::now();
        co_await s.async_connect(target_.endpoint, asio::use_awaitable);
        co_await asio::async_write(s, asio::buffer(request_), asio::use_awaitable);
        // Read until the header block and the stream's first line (`retry: <ms>`) are in.
        std::string got;
        char chunk[512];
        while (got.find("retry:") == std::string::npos) {
            std::size_t n = co_await s.async_read_some(asio::buffer(chunk), asio::use_awaitable);
            got.append(chunk, n);
        }
        if (got.rfind("HTTP/1.1 200", 0) != 0)
            throw std::runtime_error("not 200: " + got.substr(0, got.find('\r')));
        first_bytes.add(steady::now() - t0);
        slots_[i].emplace(s.release_socket());
    }

    asio::any_io_executor ex_;
    target target_;
    std::string request_;
    std::atomic<std::size_t>& next_;
    std::vector<std::optional<tcp::socket>>& slots_;
};

// Event streams that stay open without being read: `count` of them on operation `id`,
// opened 256 at a time on `io` (which must outlive them).
struct idle_streams {
    std::vector<std::optional<tcp::socket>> slots;
    latency first;  // connect → first bytes
    std::uint64_t failed = 0;

    std::size_t open() const {
        return static_cast<std::size_t>(
            std::count_if(slots.begin(), slots.end(), [](auto& o) { return o.has_value(); }));
    }

    void open_all(asio::io_context& io, unsigned threads, const target& t, const std::string& id,
                  std::size_t count) {
        std::string request = "GET /events?operation=" + id + " HTTP/1.1\r\nHost: " + t.host +
                              "\r\nAccept: text/event-stream\r\nUser-Agent: buzzer-bench\r\n\r\n";
        slots.resize(count);
        std::atomic<std::size_t> next{0};
        std::size_t openers = std::min<std::size_t>(256, count);
        std::vector<std::unique_ptr<idle_opener>> workers;
        for (std::size_t i = 0; i < openers; ++i) {
            auto ex = asio::make_strand(io);
            workers.push_back(std::make_unique<idle_opener>(ex, t, request, next, slots));
            asio::co_spawn(ex, workers.back()->run(), asio::detached);  // run() catches all
        }
        std::vector<std::thread> pool;
        for (unsigned i = 1; i < threads; ++i) pool.emplace_back([&io] { io.run(); });
        io.run();
        for (auto& th : pool) th.join();
        io.restart();
        for (auto& w : workers) {
            first.merge(w->first_bytes);
            failed += w->failed;
        }
    }
};

// A sleep operation of an hour for idle streams to follow; it stays `running` throughout.
std::string create_long_operation(const target& t) {
    return run_one<std::string>(t, create_operation,
                                R"({"kind":"sleep","input":{"seconds":3600},"timeout_s":7200})");
}

phase_result run_sse_idle(const settings& s, const target& t, pid_t server) {
    phase_result r;
    r.name = "sse-idle";
    std::string id = create_long_operation(t);
    std::this_thread::sleep_for(500ms);
    long before = server ? proc_status_kib(server, "VmRSS") : -1;

    asio::io_context io(static_cast<int>(s.threads));  // outlives the sockets below
    idle_streams streams;
    cpu_meter cpu(server);
    auto start = steady::now();
    streams.open_all(io, s.threads, t, id, s.streams);
    r.seconds = std::chrono::duration<double>(steady::now() - start).count();
    cpu.stop(r);

    std::size_t open = streams.open();
    r.ok = open;
    r.rate = static_cast<double>(open) / r.seconds;
    r.take_latency(streams.first);
    if (streams.failed) r.other = "failed x" + std::to_string(streams.failed);
    r.notes.push_back("sse-idle: " + std::to_string(open) + "/" + std::to_string(s.streams) +
                      " streams got 200 and their first bytes (`retry:`); latency = connect -> "
                      "first bytes; rate = streams opened per second");

    std::this_thread::sleep_for(1s);  // let the server settle with every stream open
    if (server) {
        long after = proc_status_kib(server, "VmRSS");
        r.notes.push_back(
            format("sse-idle: server VmRSS %.0f KiB before, %.0f KiB with the streams "
                   "open: %.2f KiB per idle stream",
                   static_cast<double>(before), static_cast<double>(after),
                   open ? static_cast<double>(after - before) / static_cast<double>(open) : nan));
    } else {
        r.notes.push_back(
            "sse-idle: server pid unknown (use --spawn or --server-pid): no RSS figure");
    }
    streams.slots.clear();
    unsigned cancel = run_one<unsigned>(t, cancel_operation, id);
    if (server) {
        std::this_thread::sleep_for(1s);
        r.notes.push_back(
            format("sse-idle: server VmRSS %.0f KiB 1 s after closing them (cancel "
                   "answered %.0f)",
                   static_cast<double>(proc_status_kib(server, "VmRSS")), cancel));
    }
    return r;
}

// ---------------------------------------------------------------------------------------------
// sse-latency: paced submissions, followed through /events by K subscribers

// An accepted operation handed to a subscriber; an empty id ends the subscriber.
struct accepted_op {
    std::string id;
    steady::time_point accepted;  // when the 202 was read
};

using op_channel = asio::experimental::concurrent_channel<void(error_code, accepted_op)>;

// State shared by the submitters and subscribers of one sse-latency run.
struct latency_run {
    target where;
    std::string body;
    double rate = 0;
    steady::time_point start;
    steady::time_point end;       // no submission is due at or after this
    steady::time_point hard_end;  // every stream is abandoned at this point
    std::vector<std::unique_ptr<op_channel>> channels;
    std::atomic<unsigned> submitters_left{0};
};

// Submits operations at the run's rate: slot k is due at start + k/rate; this one takes the
// slots index, index + count, ...
class paced_submitter {
  public:
    paced_submitter(const asio::any_io_executor& ex, latency_run& run, unsigned index,
                    unsigned count)
        : conn_(ex, run.where), timer_(ex), run_(run), index_(index), count_(count) {}

    counters stats;

    asio::awaitable<void> run() {
        try {
            co_await submit_all();
        } catch (...) {
            std::cerr << "buzzer-bench: submitter " << index_ << ": "
                      << describe(std::current_exception()) << "\n";
        }
        // The last submitter to finish tells every subscriber that nothing more comes.
        if (--run_.submitters_left == 0) {
            for (auto& ch : run_.channels) {
                error_code none;
                accepted_op end_marker;
                co_await ch->async_send(none, std::move(end_marker), asio::use_awaitable);
            }
        }
    }

  private:
    asio::awaitable<void> submit_all() {
        co_await conn_.connect();
        for (std::uint64_t slot = index_;; slot += count_) {
            auto due = run_.start +
                       std::chrono::duration_cast<steady::duration>(
                           std::chrono::duration<double>(static_cast<double>(slot) / run_.rate));
            if (due >= run_.end) co_return;
            timer_.expires_at(due);
            co_await timer_.async_wait(asio::use_awaitable);
            conn_.post("/operations", run_.body);
            auto t0 = steady::now();
            auto ec = co_await conn_.exchange();
            if (ec) {
                ++stats.errors;
                if (!co_await conn_.reconnect()) co_return;
                continue;
            }
            auto& res = conn_.response();
            if (res.result_int() != 202) {
                ++stats.other[res.result_int()];
            } else {
                auto now = steady::now();
                ++stats.ok;
                stats.lat.add(now - t0);
                accepted_op op{id_from_location(res[bhttp::field::location]), now};
                auto& ch = *run_.channels[slot % run_.channels.size()];
                error_code none;
                co_await ch.async_send(none, std::move(op), asio::use_awaitable);
            }
            if (!res.keep_alive() && !co_await conn_.reconnect()) co_return;
        }
    }

    connection conn_;
    asio::steady_timer timer_;
    latency_run& run_;
    unsigned index_;
    unsigned count_;
};

// Follows the operations handed to it: takes every id waiting in its channel (up to 100),
// opens GET /events?last_event_id=0&operation=... and reads that stream to its end.
class subscriber {
  public:
    subscriber(asio::any_io_executor ex, latency_run& run, op_channel& channel)
        : conn_(std::move(ex), run.where), run_(run), channel_(channel) {}

    latency accepted_to_completed;  // 202 read → `completed` event read
    latency finished_to_completed;  // finished_at (server clock, ms) → `completed` read, live only
    std::uint64_t events = 0;       // events of any type received
    std::uint64_t completed = 0;
    std::uint64_t replayed = 0;  // completed events finished before the stream was requested
    std::uint64_t streams = 0;
    std::uint64_t errors = 0;
    steady::time_point last_event{};

    asio::awaitable<void> run() {
        co_await conn_.connect();
        bool more = true;
        while (more) {
            auto first = co_await channel_.async_receive(asio::use_awaitable);
            if (first.id.empty()) break;
            std::unordered_map<std::string, steady::time_point> batch;
            batch.emplace(std::move(first.id), first.accepted);
            while (more && batch.size() < max_ids_per_stream) {
                bool got = channel_.try_receive([&](error_code ec, accepted_op op) {
                    if (ec || op.id.empty())
                        more = false;
                    else
                        batch.emplace(std::move(op.id), op.accepted);
                });
                if (!got) break;
            }
            co_await follow(std::move(batch));
        }
    }

  private:
    asio::awaitable<void> follow(std::unordered_map<std::string, steady::time_point> batch) {
        std::string path = "/events?last_event_id=0";
        for (const auto& [id, accepted] : batch) path += "&operation=" + id;
        conn_.get(path);
        conn_.request().set(bhttp::field::accept, "text/event-stream");
        double requested_ms = system_now_ms();
        auto& stream = conn_.stream();
        stream.expires_at(std::min(steady::now() + std::chrono::seconds(60), run_.hard_end));
        auto w = co_await bhttp::async_write(stream, conn_.request(), tuple_awaitable);
        conn_.request().erase(bhttp::field::accept);
        ++streams;
        if (std::get<0>(w)) {
            ++errors;
            co_await conn_.reconnect();
            co_return;
        }

        // Events are cut out of the chunk data as it is parsed, so the receive time is the
        // time of the read that brought the event's last byte.
        std::string text;
        auto on_event = [&](std::string_view block) {
            std::string_view type;
            std::string_view data;
            for (std::size_t at = 0; at < block.size();) {
                auto eol = block.find('\n', at);
                if (eol == std::string_view::npos) eol = block.size();
                auto line = block.substr(at, eol - at);
                if (line.rfind("event: ", 0) == 0)
                    type = line.substr(7);
                else if (line.rfind("data: ", 0) == 0)
                    data = line.substr(6);
                at = eol + 1;
            }
            if (type.empty()) return;  // `retry:` or a keepalive comment
            ++events;
            auto now = steady::now();
            last_event = now;
            if (type != "completed") return;
            ++completed;
            error_code ec;
            auto v = json::parse(data, ec);
            if (ec) return;
            auto it = batch.find(string_member(v, "id"));
            if (it != batch.end()) accepted_to_completed.add(now - it->second);
            if (auto finished = parse_time_ms(string_member(v, "finished_at"))) {
                // Finished in an earlier millisecond than the request: certainly a replay
                // from the store; the others were (mostly) delivered live by the hub.
                if (*finished < std::floor(requested_ms))
                    ++replayed;
                else
                    finished_to_completed.add_ms(system_now_ms() - *finished);
            }
        };
        auto on_chunk = [&](std::uint64_t, beast::string_view body, error_code&) {
            text.append(body.data(), body.size());
            std::size_t used = 0;
            for (auto end = text.find("\n\n"); end != std::string::npos;
                 end = text.find("\n\n", used)) {
                on_event(std::string_view(text).substr(used, end - used));
                used = end + 2;
            }
            text.erase(0, used);
            return body.size();
        };
        bhttp::response_parser<bhttp::empty_body> parser;
        parser.body_limit(std::numeric_limits<std::uint64_t>::max());
        parser.on_chunk_body(on_chunk);
        auto r = co_await bhttp::async_read(stream, conn_.buffer(), parser, tuple_awaitable);
        if (std::get<0>(r) || parser.get().result_int() != 200) {
            ++errors;
            co_await conn_.reconnect();
            co_return;
        }
        if (!parser.get().keep_alive()) co_await conn_.reconnect();
    }

    connection conn_;
    latency_run& run_;
    op_channel& channel_;
};

// ---------------------------------------------------------------------------------------------
// sse-fanout: many streams following the same operations

// One stream over every operation of the run, read to its end; ids must increase strictly.
class fanout_reader {
  public:
    fanout_reader(asio::any_io_executor ex, const target& t, std::string path,
                  steady::time_point deadline)
        : conn_(std::move(ex), t), path_(std::move(path)), deadline_(deadline) {}

    std::uint64_t events = 0;
    std::uint64_t out_of_order = 0;  // an id not above the one before: a duplicate or a reorder
    bool ended = false;              // the server ended the stream (every operation terminal)
    std::string error;
    steady::time_point first{}, last{};

    asio::awaitable<void> run() {
        try {
            co_await conn_.connect();
            conn_.get(path_);
            conn_.request().set(bhttp::field::accept, "text/event-stream");
            auto& stream = conn_.stream();
            stream.expires_at(deadline_);
            co_await bhttp::async_write(stream, conn_.request(), asio::use_awaitable);
            std::string text;
            std::int64_t last_id = 0;
            auto on_chunk = [&](std::uint64_t, beast::string_view body, error_code&) {
                text.append(body.data(), body.size());
                std::size_t used = 0;
                for (auto end = text.find("\n\n"); end != std::string::npos;
                     end = text.find("\n\n", used)) {
                    std::string_view block = std::string_view(text).substr(used, end - used);
                    used = end + 2;
                    if (block.rfind("id: ", 0) != 0) continue;  // retry: or a keepalive
                    auto id = std::strtoll(std::string(block.substr(4, 20)).c_str(), nullptr, 10);
                    if (id <= last_id) ++out_of_order;
                    last_id = id;
                    auto now = steady::now();
                    if (events++ == 0) first = now;
                    last = now;
                }
                text.erase(0, used);
                return body.size();
            };
            bhttp::response_parser<bhttp::empty_body> parser;
            parser.body_limit(std::numeric_limits<std::uint64_t>::max());
            parser.on_chunk_body(on_chunk);
            co_await bhttp::async_read(stream, conn_.buffer(), parser, asio::use_awaitable);
            ended = parser.get().result_int() == 200;
            if (!ended) error = "answered " + std::to_string(parser.get().result_int());
        } catch (const std::exception& e) {
            error = e.what();
        }
    }

  private:
    connection conn_;
    std::string path_;
    steady::time_point deadline_;
};

phase_result run_sse_fanout(const settings& s, const target& t, pid_t server) {
    phase_result r;
    r.name = "sse-fanout";
    // --ops sleep operations of --duration s, each reporting progress every 100 ms (the
    // server's coalescing interval), all followed by every one of --streams streams.
    const unsigned steps = std::max(1u, static_cast<unsigned>(s.duration * 10));
    const std::string body = R"({"kind":"sleep","input":{"seconds":)" + format("%.3f", s.duration) +
                             R"(,"steps":)" + std::to_string(steps) + "}}";
    histogram_delta delivery;
    delivery.before = read_histogram(t, "buzzer_sse_delivery_seconds");
    std::string path = "/events?last_event_id=0";
    for (unsigned i = 0; i < std::max(1u, s.ops); ++i)
        path += "&operation=" + run_one<std::string>(t, create_operation, body);

    asio::io_context io(static_cast<int>(s.threads));  // outlives the readers
    std::vector<std::unique_ptr<fanout_reader>> readers;
    auto deadline = steady::now() + std::chrono::duration_cast<steady::duration>(
                                        std::chrono::duration<double>(s.duration + 60));
    cpu_meter cpu(server);
    for (unsigned i = 0; i < s.streams; ++i) {
        auto ex = asio::make_strand(io);
        readers.push_back(std::make_unique<fanout_reader>(ex, t, path, deadline));
        asio::co_spawn(ex, readers.back()->run(), asio::detached);  // run() catches everything
    }
    {
        std::vector<std::thread> pool;
        for (unsigned i = 1; i < s.threads; ++i) pool.emplace_back([&io] { io.run(); });
        io.run();
        for (auto& th : pool) th.join();
    }
    cpu.stop(r);
    delivery.after = read_histogram(t, "buzzer_sse_delivery_seconds");

    std::uint64_t events = 0, disorder = 0, ended = 0, least = ~0ull, most = 0;
    steady::time_point first = steady::time_point::max(), last{};
    std::string error;
    for (auto& rd : readers) {
        events += rd->events;
        disorder += rd->out_of_order;
        ended += rd->ended ? 1 : 0;
        least = std::min(least, rd->events);
        most = std::max(most, rd->events);
        if (rd->events) {
            first = std::min(first, rd->first);
            last = std::max(last, rd->last);
        }
        if (error.empty()) error = rd->error;
    }
    r.seconds = events ? std::chrono::duration<double>(last - first).count() : 0;
    r.ok = events;
    r.rate = r.seconds > 0 ? static_cast<double>(events) / r.seconds : 0;
    if (!error.empty()) r.other = "error: " + error;
    r.notes.push_back(format("sse-fanout: %.0f streams, each following the same %.0f `sleep` "
                             "operations (%.1f s, %.0f progress steps); ",
                             static_cast<double>(s.streams), static_cast<double>(s.ops), s.duration,
                             static_cast<double>(steps)) +
                      "ok = events received, rate = events delivered per second (first to last "
                      "event)");
    r.notes.push_back(format("sse-fanout: %.0f of %.0f streams ended by the server after the "
                             "terminal events; ",
                             static_cast<double>(ended), static_cast<double>(s.streams)) +
                      format("events per stream min %.0f, max %.0f (equal: none lost); %.0f ids "
                             "not above the previous one",
                             static_cast<double>(least == ~0ull ? 0 : least),
                             static_cast<double>(most), static_cast<double>(disorder)));
    if (delivery.count() > 0)
        r.notes.push_back(
            format("sse-fanout: server side, commit -> written to a socket: p50 "
                   "%.3f ms, p99 %.3f ms over %.0f writes",
                   delivery.quantile(0.5) * 1e3, delivery.quantile(0.99) * 1e3, delivery.count()));
    return r;
}

phase_result run_sse_latency(const settings& s, const target& t, pid_t server) {
    phase_result r;
    r.name = "sse-latency";
    // Connected subscribers that only get heartbeats, to load the hub and the I/O threads.
    asio::io_context idle_io(1);  // outlives the idle sockets
    idle_streams idle;
    std::string idle_op;
    if (s.idle_streams > 0) {
        idle_op = create_long_operation(t);
        idle.open_all(idle_io, s.threads, t, idle_op, s.idle_streams);
    }
    histogram_delta delivery;
    delivery.before = read_histogram(t, "buzzer_sse_delivery_seconds");
    asio::io_context io(static_cast<int>(s.threads));  // outlives the channels and workers
    latency_run run;
    run.where = t;
    run.rate = s.rate;
    run.body = s.sleep_ms > 0 ? R"({"kind":"sleep","input":{"seconds":)" +
                                    format("%.3f", s.sleep_ms / 1000) + "}}"
                              : std::string(R"({"kind":"echo","input":{"n":1}})");
    unsigned submitters = std::max(1u, s.connections);
    unsigned subscribers = std::max(1u, s.subscribers);
    run.submitters_left = submitters;

    for (unsigned i = 0; i < subscribers; ++i)
        run.channels.push_back(std::make_unique<op_channel>(io, 1 << 16));
    std::vector<std::unique_ptr<paced_submitter>> senders;
    std::vector<std::unique_ptr<subscriber>> followers;
    cpu_meter cpu(server);
    run.start = steady::now() + 200ms;  // time to connect everyone first
    run.end = run.start + std::chrono::duration_cast<steady::duration>(
                              std::chrono::duration<double>(s.duration));
    run.hard_end = run.end + std::chrono::duration_cast<steady::duration>(
                                 std::chrono::duration<double>(s.drain_timeout));
    auto report = [](const std::exception_ptr& e) {
        if (e) std::cerr << "buzzer-bench: a subscriber failed: " << describe(e) << "\n";
    };
    for (unsigned i = 0; i < subscribers; ++i) {
        auto ex = asio::make_strand(io);
        followers.push_back(std::make_unique<subscriber>(ex, run, *run.channels[i]));
        asio::co_spawn(ex, followers.back()->run(), report);
    }
    for (unsigned i = 0; i < submitters; ++i) {
        auto ex = asio::make_strand(io);
        senders.push_back(std::make_unique<paced_submitter>(ex, run, i, submitters));
        asio::co_spawn(ex, senders.back()->run(), asio::detached);  // run() catches everything
    }
    {
        std::vector<std::thread> pool;
        for (unsigned i = 1; i < s.threads; ++i) pool.emplace_back([&io] { io.run(); });
        io.run();
        for (auto& th : pool) th.join();
    }
    cpu.stop(r);

    counters submitted;
    for (auto& p : senders) submitted.merge(p->stats);
    latency accepted;
    latency finished;
    std::uint64_t events = 0, completed = 0, replayed = 0, streams = 0, errors = 0;
    steady::time_point last = run.start;
    for (auto& f : followers) {
        accepted.merge(f->accepted_to_completed);
        finished.merge(f->finished_to_completed);
        events += f->events;
        completed += f->completed;
        replayed += f->replayed;
        streams += f->streams;
        errors += f->errors;
        last = std::max(last, f->last_event);
    }
    r.seconds = std::chrono::duration<double>(last - run.start).count();
    if (r.seconds <= 0) r.seconds = s.duration;  // no event at all
    r.ok = completed;
    r.rate = static_cast<double>(events) / r.seconds;
    r.take_latency(accepted);
    r.other = submitted.describe_other();
    if (errors) r.other += ", stream errors x" + std::to_string(errors);
    finished.sort();
    submitted.lat.sort();
    r.notes.push_back(
        "sse-latency: " + std::to_string(subscribers) + " subscribers, " +
        std::to_string(submitters) + " submit connections, target " +
        format("%.0f ops/s of ", s.rate) +
        (s.sleep_ms > 0 ? format("sleep %.0f ms", s.sleep_ms) : std::string("echo")) + " for " +
        format("%.1f s: %.0f accepted (%.0f ops/s)", s.duration, static_cast<double>(submitted.ok),
               static_cast<double>(submitted.ok) / s.duration));
    r.notes.push_back(
        format("sse-latency: ok = completed events received (%.0f of the accepted); "
               "rate = events of all types per second (%.0f events over %.2f s); "
               "latency = 202 read -> `completed` read",
               static_cast<double>(completed), static_cast<double>(events), r.seconds));
    r.notes.push_back(
        format("sse-latency: %.0f streams opened; %.0f completions finished before their stream "
               "was requested (replayed from the store); the other %.0f (live): finished_at ",
               static_cast<double>(streams), static_cast<double>(replayed),
               static_cast<double>(completed - replayed)) +
        format("(server clock, 1 ms resolution) -> `completed` read p50 %.1f ms, p99 %.1f ms; "
               "202 latency p50 %.2f ms, p99 %.2f ms",
               finished.ms(0.5), finished.ms(0.99), submitted.lat.ms(0.5), submitted.lat.ms(0.99)));
    delivery.after = read_histogram(t, "buzzer_sse_delivery_seconds");
    if (delivery.count() > 0)
        r.notes.push_back(
            format("sse-latency: server side, commit -> event written to the "
                   "subscriber's socket (buzzer_sse_delivery_seconds, interpolated "
                   "in its buckets): p50 %.3f ms, p99 %.3f ms over %.0f writes",
                   delivery.quantile(0.5) * 1e3, delivery.quantile(0.99) * 1e3, delivery.count()));
    if (s.idle_streams > 0) {
        r.notes.push_back(
            format("sse-latency: %.0f of %.0f idle streams were open during the run "
                   "(connected subscribers that receive only heartbeats)",
                   static_cast<double>(idle.open()), static_cast<double>(s.idle_streams)));
        idle.slots.clear();
        run_one<unsigned>(t, cancel_operation, idle_op);
    }
    return r;
}

// ---------------------------------------------------------------------------------------------
// The server, when --spawn starts it

// The buzzer binary started on 127.0.0.1:0 with a temporary database; stopped by destruction.
class spawned_server {
  public:
    spawned_server(const std::string& binary, const std::vector<std::string>& extra) {
        char pattern[] = "/tmp/buzzer-bench-XXXXXX";
        if (!::mkdtemp(pattern)) throw std::runtime_error("mkdtemp failed");
        dir_ = pattern;
        std::vector<std::string> args = {binary, "--listen", "127.0.0.1:0", "--database",
                                         (dir_ / "bench.db").string()};
        args.insert(args.end(), extra.begin(), extra.end());
        std::vector<char*> argv;
        argv.reserve(args.size() + 1);
        for (auto& a : args) argv.push_back(a.data());
        argv.push_back(nullptr);
        auto log = (dir_ / "server.log").string();

        int out[2];
        if (::pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
        pid_ = ::fork();
        if (pid_ < 0) throw std::runtime_error("fork failed");
        if (pid_ == 0) {
            // The server dies with the bench, whatever happens to the bench.
            ::prctl(PR_SET_PDEATHSIG, SIGKILL);
            ::dup2(out[1], STDOUT_FILENO);
            int err = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (err >= 0) ::dup2(err, STDERR_FILENO);
            int in = ::open("/dev/null", O_RDONLY);
            if (in >= 0) ::dup2(in, STDIN_FILENO);
            ::execv(argv[0], argv.data());
            ::_exit(127);
        }
        ::close(out[1]);
        stdout_ = out[0];
        address_ = read_listening_line();
        // Anything else the server prints on stdout is read and dropped.
        drain_ = std::thread([fd = stdout_] {
            char buf[4096];
            while (::read(fd, buf, sizeof buf) > 0) {
            }
        });
    }

    ~spawned_server() {
        stop();
        if (drain_.joinable()) drain_.join();
        if (stdout_ >= 0) ::close(stdout_);
        std::error_code ignored;
        std::filesystem::remove_all(dir_, ignored);
    }
    spawned_server(const spawned_server&) = delete;
    spawned_server& operator=(const spawned_server&) = delete;

    pid_t pid() const { return pid_; }
    // The temporary directory holding the database.
    const std::filesystem::path& dir() const { return dir_; }
    // The URL it printed: http://HOST:PORT.
    const std::string& url() const { return address_; }

    // SIGTERM, then SIGKILL after 15 s; returns a description of how it ended.
    std::string stop() {
        if (pid_ <= 0) return "already stopped";
        ::kill(pid_, SIGTERM);
        int status = 0;
        auto limit = steady::now() + 15s;
        while (::waitpid(pid_, &status, WNOHANG) == 0) {
            if (steady::now() > limit) {
                ::kill(pid_, SIGKILL);
                ::waitpid(pid_, &status, 0);
                pid_ = -1;
                return "did not stop within 15 s of SIGTERM: killed";
            }
            std::this_thread::sleep_for(10ms);
        }
        pid_ = -1;
        if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
        return "killed by signal " + std::to_string(WTERMSIG(status));
    }

  private:
    std::string read_listening_line() {
        constexpr std::string_view marker = "listening on ";
        std::string got;
        auto limit = steady::now() + 20s;
        while (got.find('\n') == std::string::npos) {
            auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(limit - steady::now());
            pollfd p{stdout_, POLLIN, 0};
            if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0)
                throw std::runtime_error("the server printed no listening line within 20 s");
            char buf[256];
            auto n = ::read(stdout_, buf, sizeof buf);
            if (n <= 0) throw std::runtime_error("the server exited before listening; see its log");
            got.append(buf, static_cast<std::size_t>(n));
        }
        auto at = got.find(marker);
        if (at == std::string::npos) throw std::runtime_error("unexpected server output: " + got);
        auto line = got.substr(at + marker.size());
        return line.substr(0, line.find('\n'));
    }

    std::filesystem::path dir_;
    pid_t pid_ = -1;
    int stdout_ = -1;
    std::string address_;
    std::thread drain_;
};

// ---------------------------------------------------------------------------------------------
// Command line and report

settings parse_command_line(int argc, char** argv, bool& help) {
    settings s;
    std::string modes = "all";
    po::options_description desc(
        "buzzer-bench: load generator for a Buzzer server on a loopback address\n\nOptions");
    // clang-format off
    desc.add_options()
        ("help,h", "show this help and exit")
        ("url", po::value(&s.url), "server to measure, http://127.0.0.1:PORT")
        ("spawn", po::value(&s.spawn), "start this buzzer binary on 127.0.0.1:0 with a temporary database, stop it at the end")
        ("server-arg", po::value(&s.server_args), "extra argument for the spawned server (repeatable), e.g. --server-arg=--threads=1")
        ("server-pid", po::value(&s.server_pid), "pid of the --url server, to read its RSS and CPU time")
        ("mode", po::value(&modes), "all (= healthz,submit,e2e), or a comma-separated list of healthz, submit, e2e, sse-idle, sse-latency, sse-fanout")
        ("connections,c", po::value(&s.connections), "connections of healthz/submit/e2e; submit connections of sse-latency (default 64)")
        ("duration,d", po::value(&s.duration), "seconds of each timed phase (default 10)")
        ("threads,t", po::value(&s.threads), "bench I/O threads (default 1)")
        ("streams", po::value(&s.streams), "event streams of sse-idle and sse-fanout (default 1000)")
        ("subscribers", po::value(&s.subscribers), "event-stream subscribers of sse-latency (default 100)")
        ("rate", po::value(&s.rate), "submissions per second of sse-latency (default 1000)")
        ("sleep-ms", po::value(&s.sleep_ms), "sse-latency submits `sleep` of this many ms instead of `echo` (default 0: echo)")
        ("drain-timeout", po::value(&s.drain_timeout), "seconds to wait for the server to finish accepted work (default 120)")
        ("ops", po::value(&s.ops), "sse-fanout: operations every stream follows (default 10, at most 100)")
        ("idle-streams", po::value(&s.idle_streams), "sse-latency: also hold this many idle event streams open during the run (default 0)")
        ("kind", po::value(&s.kind), "kind of the operations of submit and e2e, with input {\"n\": i} (default echo)")
        ("sample-every", po::value(&s.sample_every), "submit: look up every Nth accepted op afterwards, 0 for none (default 10)");
    // clang-format on
    po::variables_map vm;
    try {
        po::store(po::parse_command_line(argc, argv, desc), vm);
        po::notify(vm);
    } catch (const po::error& e) {
        throw usage_error(e.what());
    }
    if (vm.count("help")) {
        std::cout << desc << "\n";
        help = true;
        return s;
    }
    if (s.url.empty() == s.spawn.empty())
        throw usage_error("give exactly one of --url and --spawn");
    if (modes == "all") modes = "healthz,submit,e2e";
    for (std::size_t at = 0; at <= modes.size();) {
        auto comma = std::min(modes.find(',', at), modes.size());
        auto m = modes.substr(at, comma - at);
        if (m != "healthz" && m != "submit" && m != "e2e" && m != "sse-idle" &&
            m != "sse-latency" && m != "sse-fanout")
            throw usage_error("unknown mode '" + m + "'");
        s.modes.push_back(m);
        at = comma + 1;
    }
    if (s.threads == 0 || s.connections == 0 || s.duration <= 0 || s.duration > 3600 ||
        s.rate <= 0 || s.streams == 0 || s.subscribers == 0)
        throw usage_error(
            "--threads, --connections, --streams, --subscribers, --rate and "
            "--duration (at most 3600) must be positive");
    return s;
}

// Raises the soft limit of open files to the hard limit (sse-idle needs one per stream).
rlim_t raise_file_limit() {
    rlimit rl{};
    if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
    ::getrlimit(RLIMIT_NOFILE, &rl);
    return rl.rlim_cur;
}

std::string cell(double v, const char* fmt) {
    if (std::isnan(v)) return "-";
    char buf[64];
    std::snprintf(buf, sizeof buf, fmt, v);
    return buf;
}

void print_summary(const std::vector<phase_result>& results) {
    std::printf("\n%-12s %10s %7s %11s %9s %9s %9s %8s %8s  %s\n", "phase", "ok", "secs", "rate/s",
                "p50 ms", "p99 ms", "max ms", "srv CPU", "bench", "other");
    for (const auto& r : results) {
        std::printf("%-12s %10llu %7.2f %11.0f %9s %9s %9s %8s %8s  %s\n", r.name.c_str(),
                    static_cast<unsigned long long>(r.ok), r.seconds, r.rate,
                    cell(r.p50_ms, "%.2f").c_str(), cell(r.p99_ms, "%.2f").c_str(),
                    cell(r.max_ms, "%.2f").c_str(), cell(r.server_cpu, "%.2f").c_str(),
                    cell(r.bench_cpu, "%.2f").c_str(), r.other.c_str());
    }
    std::printf("\n");
    for (const auto& r : results)
        for (const auto& n : r.notes) std::printf("  %s\n", n.c_str());
    // Durable submissions against the HTTP ceiling of the same server, when both ran.
    auto rate_of = [&](std::string_view name) {
        for (const auto& r : results)
            if (r.name == name) return r.rate;
        return 0.0;
    };
    if (double h = rate_of("healthz"), sub = rate_of("submit"); h > 0 && sub > 0)
        std::printf("  submit / healthz: %.1f %% (%.0f / %.0f per second, same server)\n",
                    100 * sub / h, sub, h);
    std::fflush(stdout);
}

int run(int argc, char** argv) {
    bool help = false;
    settings s = parse_command_line(argc, argv, help);
    if (help) return 0;
    ::signal(SIGPIPE, SIG_IGN);
    rlim_t files = raise_file_limit();

    std::unique_ptr<spawned_server> spawned;
    pid_t pid = s.server_pid;
    std::string url = s.url;
    char date[64];
    std::time_t now = std::time(nullptr);
    std::tm utc{};
    ::gmtime_r(&now, &utc);
    std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", &utc);
    // The load average tells whether something else was competing for the CPUs.
    std::string load;
    std::getline(std::ifstream("/proc/loadavg"), load);
    std::printf("buzzer-bench %s, %u CPUs, load average %s, open-file limit %llu\n", date,
                std::thread::hardware_concurrency(), load.substr(0, 14).c_str(),
                static_cast<unsigned long long>(files));
    if (!s.spawn.empty()) {
        spawned = std::make_unique<spawned_server>(s.spawn, s.server_args);
        pid = spawned->pid();
        url = spawned->url();
        std::this_thread::sleep_for(200ms);
        std::printf("spawned %s (pid %d) at %s; binary %llu bytes; idle VmRSS %ld KiB\n",
                    s.spawn.c_str(), static_cast<int>(pid), url.c_str(),
                    static_cast<unsigned long long>(std::filesystem::file_size(s.spawn)),
                    proc_status_kib(pid, "VmRSS"));
    } else {
        parse_url(url);  // refuse a bad or non-loopback URL before anything else
        std::printf("server %s%s\n", url.c_str(),
                    pid ? (" (pid " + std::to_string(pid) + ")").c_str() : "");
    }
    auto probe_dir = spawned ? spawned->dir() : std::filesystem::temp_directory_path();
    auto fsync = probe_fdatasync(probe_dir);
    std::printf("fdatasync of 4 KiB in %s: p50 %.3f ms, p99 %.3f ms%s\n", probe_dir.c_str(),
                fsync.first, fsync.second, spawned ? " (the database's directory)" : "");
    std::fflush(stdout);
    target t = parse_url(url);

    std::vector<phase_result> results;
    for (const auto& m : s.modes) {
        std::fprintf(stderr, "buzzer-bench: running %s...\n", m.c_str());
        auto before = store_counters::read(t);
        auto start = steady::now();
        if (m == "healthz")
            results.push_back(run_closed_loop(s, t, pid, loop_kind::healthz));
        else if (m == "submit")
            results.push_back(run_closed_loop(s, t, pid, loop_kind::submit));
        else if (m == "e2e")
            results.push_back(run_closed_loop(s, t, pid, loop_kind::e2e));
        else if (m == "sse-idle")
            results.push_back(run_sse_idle(s, t, pid));
        else if (m == "sse-latency")
            results.push_back(run_sse_latency(s, t, pid));
        else if (m == "sse-fanout")
            results.push_back(run_sse_fanout(s, t, pid));
        // What the phase cost the store (everything from its start to now, drain included).
        auto after = store_counters::read(t);
        double commits = after.commits - before.commits;
        double writes = after.writes - before.writes;
        if (!std::isnan(commits) && !std::isnan(writes) && commits > 0) {
            double secs = std::chrono::duration<double>(steady::now() - start).count();
            results.back().notes.push_back(
                m +
                format(": store: %.0f group commits (%.0f/s), %.0f writes, %.1f writes per commit",
                       commits, commits / secs, writes, writes / commits));
        }
    }
    print_summary(results);
    bool all_ok = std::all_of(results.begin(), results.end(), [](auto& r) { return r.ok > 0; });
    if (pid) {
        std::printf("  server peak VmRSS (VmHWM) %ld KiB, VmRSS now %ld KiB\n",
                    proc_status_kib(pid, "VmHWM"), proc_status_kib(pid, "VmRSS"));
    }
    if (spawned) std::printf("  server stopped: %s\n", spawned->stop().c_str());
    return all_ok ? 0 : 1;
}

}  // namespace
}  // namespace buzzer::bench

int main(int argc, char** argv) {
    try {
        return buzzer::bench::run(argc, argv);
    } catch (const buzzer::bench::usage_error& e) {
        std::cerr << "buzzer-bench: " << e.what() << " (see --help)\n";
        return 2;
    } catch (const std::exception& e) {
        std::cerr << "buzzer-bench: " << e.what() << "\n";
        return 1;
    }
}
