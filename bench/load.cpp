// buzzer-bench: a coroutine HTTP/1.1 load generator for Buzzer's API, over plain TCP or TLS.
// Modes healthz, submit, e2e, handshake, sse-idle, sse-latency and sse-fanout;
// bench/README.md says exactly what each one measures.
#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
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
#include <boost/asio/ssl.hpp>
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
    std::string follow_url;  // sse-latency's subscribers: another node of the same database
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
    std::vector<std::string> headers;  // "Name: value"
    std::string credential = "none";
    bool tls = false;
    std::string cacert;
    std::string tls_version = "1.3";
    bool tls_resume = false;
};

// Header fields sent with every request, in order.
using header_list = std::vector<std::pair<std::string, std::string>>;

// Where the server listens: a loopback endpoint and the Host header that names it, and how
// to talk to it.
struct target {
    tcp::endpoint endpoint;
    std::string host;
    bool https = false;
    // The client context of an https target, shared by every connection (run() owns it).
    asio::ssl::context* tls = nullptr;
    // Each connection offers its last session when it reconnects (handshake --tls-resume).
    bool resume = false;
    header_list headers;
    // Sent as Authorization on GET /metrics instead of the headers' (auth.metrics_token).
    std::string metrics_authorization;
};

// Parses http[s]://HOST:PORT (an optional trailing slash); HOST must be a loopback address.
target parse_url(const std::string& url) {
    bool https = url.rfind("https://", 0) == 0;
    if (!https && url.rfind("http://", 0) != 0)
        throw usage_error("--url must start with http:// or https://");
    std::string rest = url.substr(https ? 8 : 7);
    if (auto slash = rest.find('/'); slash != std::string::npos) {
        if (rest.substr(slash) != "/") throw usage_error("--url must not have a path");
        rest.resize(slash);
    }
    std::string host;
    std::string port;
    if (!rest.empty() && rest.front() == '[') {
        auto close = rest.find(']');
        if (close == std::string::npos || close + 1 >= rest.size() || rest[close + 1] != ':')
            throw usage_error("--url: expected http[s]://[IPV6]:PORT");
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
    target t;
    t.endpoint = tcp::endpoint(address, static_cast<unsigned short>(number));
    t.host = rest;
    t.https = https;
    return t;
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

// One keep-alive HTTP/1.1 connection, plain or TLS, with a reusable request and response.
// TLS is an optional layer over the same TCP stream rather than a type parameter or a virtual
// interface: each read or write tests it once, which costs the plain path nothing measurable
// and keeps one connection type for every mode.
class connection {
  public:
    using tls_stream = asio::ssl::stream<beast::tcp_stream&>;

    connection(asio::any_io_executor ex, const target& t) : tcp_(std::move(ex)), target_(t) {
        req_.version(11);
        req_.set(bhttp::field::host, target_.host);
        req_.set(bhttp::field::user_agent, "buzzer-bench");
        for (const auto& [name, value] : target_.headers) req_.insert(name, value);
    }

    // Opens the connection, TLS handshake included (throws on failure).
    asio::awaitable<void> connect(steady::duration timeout = io_timeout) {
        if (auto ec = co_await open(timeout)) throw boost::system::system_error(ec, "connect");
    }

    // Closes and reopens the connection; false if that failed (last_error() says why).
    asio::awaitable<bool> reconnect() {
        close();
        auto ec = co_await open(io_timeout);
        if (ec) last_error_ = ec;
        co_return !ec;
    }

    // Closes the socket at once: no close_notify, nothing more is read.
    void close() {
        if (tls_ && target_.resume) {
            SSL* ssl = tls_->native_handle();
            SSL_SESSION* s = SSL_get1_session(ssl);
            if (s && SSL_SESSION_is_resumable(s)) {
                session_.reset(s);
                // Else SSL_free takes a session that never saw a shutdown for a broken one
                // and marks it not resumable: the next connection would offer nothing.
                SSL_set_shutdown(ssl, SSL_get_shutdown(ssl) | SSL_SENT_SHUTDOWN);
            } else if (s) {
                SSL_SESSION_free(s);
            }
        }
        tls_.reset();
        error_code ignored;
        tcp_.socket().close(ignored);
        buffer_.clear();
    }

    // The socket, handed over with the session as it is (TLS state dropped, nothing sent):
    // an idle stream needs only the server to think it is connected.
    tcp::socket release_socket() {
        tls_.reset();
        return tcp_.release_socket();
    }

    // The error of the last failed reconnect().
    error_code last_error() const { return last_error_; }
    // Version, cipher suite and key exchange group of the current TLS connection.
    std::string tls_summary() {
        if (!tls_) return "no TLS";
        SSL* ssl = tls_->native_handle();
        const char* group = SSL_group_to_name(ssl, SSL_get_negotiated_group(ssl));
        return std::string(SSL_get_version(ssl)) + " " + SSL_get_cipher_name(ssl) + ", " +
               (group ? group : "?");
    }
    // Whether the TLS session of the current connection was resumed.
    bool resumed() { return tls_ && SSL_session_reused(tls_->native_handle()) == 1; }

    // The request exchange() sends; set method, target, headers and body before.
    bhttp::request<bhttp::string_body>& request() { return req_; }
    // The response exchange() read.
    bhttp::response<bhttp::string_body>& response() { return res_; }
    beast::flat_buffer& buffer() { return buffer_; }
    // The deadline of every read and write until it is set again.
    void expires_at(steady::time_point t) { tcp_.expires_at(t); }

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
        tcp_.expires_after(timeout);
        if (auto ec = co_await write_request()) co_return ec;
        res_ = {};
        co_return co_await read(res_);
    }

    // Writes request() under the deadline set last, written out by hand: Beast's serializer
    // costs more CPU than the rest of a request, and this CPU is taken from the server under
    // test.
    asio::awaitable<error_code> write_request() {
        wire_.clear();
        wire_.append(req_.method_string()).append(" ").append(req_.target());
        wire_.append(" HTTP/1.1\r\n");
        for (const auto& f : req_)
            wire_.append(f.name_string()).append(": ").append(f.value()).append("\r\n");
        wire_.append("\r\n").append(req_.body());
        // (No co_await inside ?: : g++ 12 miscompiles it.)
        if (tls_) {
            auto [ec, n] = co_await asio::async_write(*tls_, asio::buffer(wire_), tuple_awaitable);
            co_return ec;
        }
        auto [ec, n] = co_await asio::async_write(tcp_, asio::buffer(wire_), tuple_awaitable);
        co_return ec;
    }

    // Reads one message (a response or a parser) with Beast, under the deadline set last.
    template <class Message>
    asio::awaitable<error_code> read(Message& m) {
        if (tls_) {
            auto [ec, n] = co_await bhttp::async_read(*tls_, buffer_, m, tuple_awaitable);
            co_return ec;
        }
        auto [ec, n] = co_await bhttp::async_read(tcp_, buffer_, m, tuple_awaitable);
        co_return ec;
    }

    // Reads what is there (at least a byte) into `b`, under the deadline set last.
    asio::awaitable<std::tuple<error_code, std::size_t>> read_some(asio::mutable_buffer b) {
        if (tls_) co_return co_await tls_->async_read_some(b, tuple_awaitable);
        co_return co_await tcp_.async_read_some(b, tuple_awaitable);
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
        tcp_.expires_after(timeout);
        if (auto ec = co_await write_request()) co_return ec;
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
            auto b = buffer_.prepare(16 * 1024);
            // read_some() inlined: one coroutine frame less per read of the closed loops.
            error_code ec;
            std::size_t n = 0;
            if (tls_)
                std::tie(ec, n) = co_await tls_->async_read_some(b, tuple_awaitable);
            else
                std::tie(ec, n) = co_await tcp_.async_read_some(b, tuple_awaitable);
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
    asio::awaitable<error_code> open(steady::duration timeout) {
        tcp_.expires_after(timeout);
        auto [ec] = co_await tcp_.async_connect(target_.endpoint, tuple_awaitable);
        if (ec) co_return ec;
        error_code ignored;
        tcp_.socket().set_option(tcp::no_delay(true), ignored);
        if (!target_.tls) co_return error_code{};
        tls_.emplace(tcp_, *target_.tls);
        if (session_) SSL_set_session(tls_->native_handle(), session_.get());
        auto [hs] = co_await tls_->async_handshake(asio::ssl::stream_base::client, tuple_awaitable);
        co_return hs;
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

    struct session_free {
        void operator()(SSL_SESSION* s) const { SSL_SESSION_free(s); }
    };

    beast::tcp_stream tcp_;
    std::optional<tls_stream> tls_;  // over tcp_, when the target is https
    target target_;
    std::unique_ptr<SSL_SESSION, session_free> session_;  // offered by the next open()
    error_code last_error_;
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
    if (path == "/metrics" && !t.metrics_authorization.empty())
        c.request().set(bhttp::field::authorization, t.metrics_authorization);
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
// handshake: a new connection per request

// One worker opening a new connection for each GET /healthz (`Connection: close`) until the
// deadline. Over TLS each is a full handshake, unless the target offers the last session.
class handshake_loop {
  public:
    handshake_loop(asio::any_io_executor ex, const target& t, steady::time_point deadline)
        : conn_(std::move(ex), t), deadline_(deadline) {}

    counters stats;
    std::uint64_t resumed = 0;  // TLS sessions the server resumed
    std::string first_error;

    asio::awaitable<void> run() {
        conn_.get("/healthz");
        conn_.request().set(bhttp::field::connection, "close");
        connection::lean_response res;
        asio::steady_timer pause(co_await asio::this_coro::executor);
        while (steady::now() < deadline_) {
            auto t0 = steady::now();
            if (!co_await conn_.reconnect()) {
                fail(conn_.last_error());
                // A refused connect fails at once: no spinning on it.
                pause.expires_after(10ms);
                co_await pause.async_wait(tuple_awaitable);
                continue;
            }
            auto ec = co_await conn_.exchange_lean(io_timeout, res);
            auto t1 = steady::now();
            if (ec) {
                fail(ec);
            } else if (res.status == 200) {
                ++stats.ok;
                stats.lat.add(t1 - t0);
                if (conn_.resumed()) ++resumed;
            } else {
                ++stats.other[res.status];
            }
        }
        conn_.close();
    }

  private:
    void fail(const error_code& ec) {
        if (stats.errors++ == 0) first_error = ec.message();
    }

    connection conn_;
    steady::time_point deadline_;
};

phase_result run_handshake(const settings& s, const target& t, pid_t server) {
    phase_result r;
    r.name = "handshake";
    asio::io_context io(static_cast<int>(s.threads));  // outlives the workers
    std::vector<std::unique_ptr<handshake_loop>> workers(s.connections);
    cpu_meter cpu(server);
    auto start = steady::now();
    auto deadline = start + std::chrono::duration_cast<steady::duration>(
                                std::chrono::duration<double>(s.duration));
    run_workers(io, s.threads, s.connections, [&](const asio::any_io_executor& ex, std::size_t i) {
        workers[i] = std::make_unique<handshake_loop>(ex, t, deadline);
        return workers[i]->run();
    });
    r.seconds = std::chrono::duration<double>(steady::now() - start).count();
    cpu.stop(r);
    counters total;
    std::uint64_t resumed = 0;
    std::string error;
    for (auto& w : workers) {
        total.merge(w->stats);
        resumed += w->resumed;
        if (error.empty()) error = w->first_error;
    }
    r.ok = total.ok;
    r.rate = static_cast<double>(total.ok) / r.seconds;
    r.other = total.describe_other();
    r.take_latency(total.lat);
    std::string how = !t.tls     ? std::string("plain TCP, no TLS")
                      : t.resume ? "TLS, each connection offering the session of the one before (" +
                                       std::to_string(resumed) + " resumed)"
                                 : "TLS, full handshakes (no session resumption)";
    r.notes.push_back("handshake: " + std::to_string(s.connections) +
                      " workers, each: connect, GET /healthz with Connection: close, read the "
                      "response, close; " +
                      how + "; ok = connections/s; latency = connect start -> response read");
    if (!error.empty()) r.notes.push_back("handshake: first error: " + error);
    return r;
}

// ---------------------------------------------------------------------------------------------
// sse-idle: many open, idle event streams

// Opens idle streams, taking the next index from a shared counter, until all are open.
class idle_opener {
  public:
    idle_opener(asio::any_io_executor ex, const target& t, std::string path,
                std::atomic<std::size_t>& next, std::vector<std::optional<tcp::socket>>& slots)
        : ex_(std::move(ex)), target_(t), path_(std::move(path)), next_(next), slots_(slots) {}

    std::uint64_t failed = 0;
    latency first_bytes;  // connect → the stream's `retry:` line received (TLS handshake included)

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
        connection c(ex_, target_);
        auto t0 = steady::now();
        co_await c.connect(10s);  // the deadline of the whole opening
        c.get(path_);
        c.request().set(bhttp::field::accept, "text/event-stream");
        if (auto ec = co_await c.write_request()) throw boost::system::system_error(ec, "write");
        // Read until the header block and the stream's first line (`retry: <ms>`) are in.
        std::string got;
        char chunk[512];
        while (got.find("retry:") == std::string::npos) {
            auto [ec, n] = co_await c.read_some(asio::buffer(chunk));
            if (ec) throw boost::system::system_error(ec, "read");
            got.append(chunk, n);
        }
        if (got.rfind("HTTP/1.1 200", 0) != 0)
            throw std::runtime_error("not 200: " + got.substr(0, got.find('\r')));
        first_bytes.add(steady::now() - t0);
        // Over TLS the client's session state goes: the stream is never read again, and what
        // is measured is the server's memory, not the bench's.
        slots_[i].emplace(c.release_socket());
    }

    asio::any_io_executor ex_;
    target target_;
    std::string path_;
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
        std::string path = "/events?operation=" + id;
        slots.resize(count);
        std::atomic<std::size_t> next{0};
        std::size_t openers = std::min<std::size_t>(256, count);
        std::vector<std::unique_ptr<idle_opener>> workers;
        for (std::size_t i = 0; i < openers; ++i) {
            auto ex = asio::make_strand(io);
            workers.push_back(std::make_unique<idle_opener>(ex, t, path, next, slots));
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
    target where;   // the submitters'
    target follow;  // the subscribers' (the same server unless --follow-url)
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
        : conn_(std::move(ex), run.follow), run_(run), channel_(channel) {}

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
        conn_.expires_at(std::min(steady::now() + std::chrono::seconds(60), run_.hard_end));
        auto w = co_await conn_.write_request();
        conn_.request().erase(bhttp::field::accept);
        ++streams;
        if (w) {
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
        auto r = co_await conn_.read(parser);
        if (r || parser.get().result_int() != 200) {
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
            conn_.expires_at(deadline_);
            if (auto ec = co_await conn_.write_request())
                throw boost::system::system_error(ec, "write");
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
            if (auto ec = co_await conn_.read(parser)) throw boost::system::system_error(ec);
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

phase_result run_sse_latency(const settings& s, const target& t, const target& follow,
                             pid_t server) {
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
    delivery.before = read_histogram(follow, "buzzer_sse_delivery_seconds");
    asio::io_context io(static_cast<int>(s.threads));  // outlives the channels and workers
    latency_run run;
    run.where = t;
    run.follow = follow;
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
    delivery.after = read_histogram(follow, "buzzer_sse_delivery_seconds");
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
// The temporary directory exists from construction, for the files the server is to be
// started with (certificate, configuration, keys made on the database).
class spawned_server {
  public:
    spawned_server() {
        char pattern[] = "/tmp/buzzer-bench-XXXXXX";
        if (!::mkdtemp(pattern)) throw std::runtime_error("mkdtemp failed");
        dir_ = pattern;
    }

    void start(const std::string& binary, const std::vector<std::string>& extra) {
        std::vector<std::string> args = {binary, "--listen", "127.0.0.1:0", "--database",
                                         database().string()};
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
    std::filesystem::path database() const { return dir_ / "bench.db"; }
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
// Certificates and credentials for --spawn, made with OpenSSL

template <class T, void (*Free)(T*)>
struct openssl_free {
    void operator()(T* p) const noexcept { Free(p); }
};
using pkey_ptr = std::unique_ptr<EVP_PKEY, openssl_free<EVP_PKEY, EVP_PKEY_free>>;
using bio_ptr = std::unique_ptr<BIO, openssl_free<BIO, BIO_free_all>>;
using x509_ptr = std::unique_ptr<X509, openssl_free<X509, X509_free>>;
using md_ctx_ptr = std::unique_ptr<EVP_MD_CTX, openssl_free<EVP_MD_CTX, EVP_MD_CTX_free>>;
using ecdsa_sig_ptr = std::unique_ptr<ECDSA_SIG, openssl_free<ECDSA_SIG, ECDSA_SIG_free>>;

[[noreturn]] void openssl_fail(const std::string& what) {
    char reason[256] = "no detail";
    if (unsigned long e = ERR_get_error()) ERR_error_string_n(e, reason, sizeof reason);
    ERR_clear_error();
    throw std::runtime_error(what + ": " + reason);
}

pkey_ptr make_p256_key() {
    pkey_ptr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
    if (!key) openssl_fail("cannot make a P-256 key");
    return key;
}

// Writes `file` (mode 0600) with `write` on a BIO.
template <class Write>
void write_pem(const std::filesystem::path& file, Write write) {
    bio_ptr out(BIO_new_file(file.c_str(), "w"));
    if (!out || write(out.get()) != 1) openssl_fail("cannot write " + file.string());
    std::filesystem::permissions(
        file, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
}

// A self-signed ECDSA P-256 certificate for 127.0.0.1, ::1 and localhost, valid for two days.
void make_self_signed(const std::filesystem::path& cert_file,
                      const std::filesystem::path& key_file) {
    auto key = make_p256_key();
    x509_ptr cert(X509_new());
    if (!cert) openssl_fail("X509_new");
    X509_NAME* name = X509_get_subject_name(cert.get());
    const auto* cn = reinterpret_cast<const unsigned char*>("buzzer-bench");
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, cert.get(), cert.get(), nullptr, nullptr, 0);
    std::unique_ptr<X509_EXTENSION, openssl_free<X509_EXTENSION, X509_EXTENSION_free>> san(
        X509V3_EXT_conf_nid(nullptr, &v3, NID_subject_alt_name,
                            "IP:127.0.0.1,IP:::1,DNS:localhost"));
    if (!X509_set_version(cert.get(), 2) ||
        !ASN1_INTEGER_set(X509_get_serialNumber(cert.get()),
                          static_cast<long>(std::time(nullptr))) ||
        !X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600) ||
        !X509_gmtime_adj(X509_getm_notAfter(cert.get()), 2 * 86400) ||
        !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, cn, -1, -1, 0) ||
        !X509_set_issuer_name(cert.get(), name) || !X509_set_pubkey(cert.get(), key.get()) ||
        !san || !X509_add_ext(cert.get(), san.get(), -1) ||
        !X509_sign(cert.get(), key.get(), EVP_sha256()))
        openssl_fail("cannot make the certificate");
    write_pem(key_file, [&](BIO* b) {
        return PEM_write_bio_PrivateKey(b, key.get(), nullptr, nullptr, 0, nullptr, nullptr);
    });
    write_pem(cert_file, [&](BIO* b) { return PEM_write_bio_X509(b, cert.get()); });
}

std::string base64url(std::string_view in) {
    static constexpr char digits[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    std::string out;
    std::uint32_t bits = 0;
    int count = 0;
    for (unsigned char c : in) {
        bits = (bits << 8) | c;
        count += 8;
        while (count >= 6) {
            count -= 6;
            out += digits[(bits >> count) & 63];
        }
    }
    if (count > 0) out += digits[(bits << (6 - count)) & 63];
    return out;
}

// A JWS compact serialisation of `claims` signed with ES256 by `key`.
std::string sign_es256(EVP_PKEY* key, const std::string& kid, const json::object& claims) {
    const std::string input =
        base64url(json::serialize(json::object{{"alg", "ES256"}, {"typ", "JWT"}, {"kid", kid}})) +
        "." + base64url(json::serialize(claims));
    const auto* data = reinterpret_cast<const unsigned char*>(input.data());
    md_ctx_ptr ctx(EVP_MD_CTX_new());
    std::size_t len = 0;
    if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key) != 1 ||
        EVP_DigestSign(ctx.get(), nullptr, &len, data, input.size()) != 1)
        openssl_fail("cannot sign the token");
    std::vector<unsigned char> der(len);
    if (EVP_DigestSign(ctx.get(), der.data(), &len, data, input.size()) != 1)
        openssl_fail("cannot sign the token");
    // OpenSSL gives a DER SEQUENCE of two INTEGERs; JWS wants R and S as 32-byte big-endian
    // numbers, one after the other.
    const unsigned char* p = der.data();
    ecdsa_sig_ptr sig(d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(len)));
    if (!sig) openssl_fail("cannot decode the signature");
    const BIGNUM* r = nullptr;
    const BIGNUM* s = nullptr;
    ECDSA_SIG_get0(sig.get(), &r, &s);
    unsigned char raw[64];
    if (BN_bn2binpad(r, raw, 32) != 32 || BN_bn2binpad(s, raw + 32, 32) != 32)
        openssl_fail("cannot encode the signature");
    return input + "." + base64url(std::string_view(reinterpret_cast<const char*>(raw), 64));
}

// 32 random bytes as hex.
std::string random_token() {
    unsigned char bytes[32];
    if (RAND_bytes(bytes, sizeof bytes) != 1) openssl_fail("RAND_bytes");
    static constexpr char hex[] = "0123456789abcdef";
    std::string out;
    for (unsigned char b : bytes) {
        out += hex[b >> 4];
        out += hex[b & 15];
    }
    return out;
}

// Runs `args` (args[0] a path) and returns its standard output; throws unless it exits 0.
// Its standard error goes to the bench's.
std::string run_and_capture(const std::vector<std::string>& args) {
    std::vector<std::string> copy = args;
    std::vector<char*> argv;
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    int out[2];
    if (::pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
    pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error("fork failed");
    if (pid == 0) {
        ::dup2(out[1], STDOUT_FILENO);
        ::execv(argv[0], argv.data());
        ::_exit(127);
    }
    ::close(out[1]);
    std::string text;
    char buf[4096];
    for (ssize_t n; (n = ::read(out[0], buf, sizeof buf)) > 0;)
        text.append(buf, static_cast<std::size_t>(n));
    ::close(out[0]);
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        throw std::runtime_error(args[0] + " " + args[1] + " " + args[2] + " failed");
    return text;
}

// What --spawn --tls / --credential prepared: the server's extra arguments, the requests'
// extra headers, and the file the client verifies the server's certificate with.
struct spawn_setup {
    std::vector<std::string> server_args;
    header_list headers;
    std::string metrics_authorization;
    std::string cacert;
    std::string description;  // for the report's header
};

spawn_setup prepare_spawn(const settings& s, const spawned_server& server) {
    spawn_setup out;
    const auto& dir = server.dir();
    if (s.tls) {
        make_self_signed(dir / "cert.pem", dir / "key.pem");
        out.server_args = {"--tls-cert", (dir / "cert.pem").string(), "--tls-key",
                           (dir / "key.pem").string()};
        out.cacert = (dir / "cert.pem").string();
        out.description = "TLS: a self-signed ECDSA P-256 certificate; ";
    }
    if (s.credential == "none") {
        out.description += "no credentials (the server is open)";
        return out;
    }
    // /metrics needs an admin credential: the bench's own scrapes use auth.metrics_token, so
    // that the load runs with a write credential.
    const std::string metrics_token = random_token();
    out.metrics_authorization = "Bearer " + metrics_token;
    json::object auth{{"metrics_token", metrics_token}};
    std::string credential;
    if (s.credential == "api-key") {
        auto text =
            run_and_capture({s.spawn, "keys", "create", "--database", server.database().string(),
                             "--tenant", "bench", "--role", "write", "--name", "bench"});
        credential = text.substr(0, text.find_first_of(" \t\r\n"));
        if (credential.rfind("bzk_", 0) != 0)
            throw std::runtime_error("buzzer keys create printed no key: " + text);
        out.description += "an API key (tenant bench, role write)";
    } else {
        auto key = make_p256_key();
        auto pem = dir / "jwt-bench.pem";
        write_pem(pem, [&](BIO* b) { return PEM_write_bio_PUBKEY(b, key.get()); });
        const std::string issuer = "https://buzzer-bench.invalid/";
        auth["jwt"] = json::object{
            {"issuer", issuer},
            {"audience", "buzzer"},
            {"tenant_claim", "tenant"},
            {"keys", json::array{json::object{
                         {"kid", "bench"}, {"alg", "ES256"}, {"pem_file", pem.string()}}}}};
        auto now = static_cast<std::int64_t>(std::time(nullptr));
        credential = sign_es256(key.get(), "bench",
                                json::object{{"iss", issuer},
                                             {"aud", "buzzer"},
                                             {"sub", "buzzer-bench"},
                                             {"tenant", "bench"},
                                             {"scope", "buzzer:write"},
                                             {"iat", now},
                                             {"exp", now + 3600}});
        out.description += "an ES256 JWT (tenant bench, scope buzzer:write, " +
                           std::to_string(credential.size()) + " bytes)";
    }
    out.description += "; /metrics read with auth.metrics_token";
    auto config = dir / "buzzer.json";
    std::ofstream(config) << json::serialize(json::object{{"auth", auth}}) << "\n";
    out.server_args.push_back("--config");
    out.server_args.push_back(config.string());
    out.headers.emplace_back("Authorization", "Bearer " + credential);
    return out;
}

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
        ("url", po::value(&s.url), "server to measure, http://127.0.0.1:PORT or https://127.0.0.1:PORT")
        ("follow-url", po::value(&s.follow_url), "sse-latency: open the subscribers' streams on this server (another node on the same database), http://127.0.0.1:PORT; default the measured one")
        ("spawn", po::value(&s.spawn), "start this buzzer binary on 127.0.0.1:0 with a temporary database, stop it at the end")
        ("server-arg", po::value(&s.server_args), "extra argument for the spawned server (repeatable), e.g. --server-arg=--threads=1")
        ("server-pid", po::value(&s.server_pid), "pid of the --url server, to read its RSS and CPU time")
        ("tls", po::bool_switch(&s.tls), "--spawn: serve HTTPS with a self-signed ECDSA P-256 certificate made for the run")
        ("cacert", po::value(&s.cacert), "https --url: PEM file to verify the server's certificate with (default: the system's CAs)")
        ("tls-version", po::value(&s.tls_version), "the one TLS version the client offers: 1.2 or 1.3 (default 1.3)")
        ("tls-resume", po::bool_switch(&s.tls_resume), "reconnections offer the connection's last TLS session (default: full handshakes)")
        ("credential", po::value(&s.credential), "--spawn: none, api-key (buzzer keys create, role write) or jwt-es256 (auth.jwt, scope buzzer:write); default none")
        ("header,H", po::value(&s.headers), "header sent with every request, 'Name: value' (repeatable)")
        ("mode", po::value(&modes), "all (= healthz,submit,e2e), or a comma-separated list of healthz, submit, e2e, handshake, sse-idle, sse-latency, sse-fanout")
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
        if (m != "healthz" && m != "submit" && m != "e2e" && m != "handshake" && m != "sse-idle" &&
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
    if (s.credential != "none" && s.credential != "api-key" && s.credential != "jwt-es256")
        throw usage_error("--credential takes none, api-key or jwt-es256");
    if (!s.url.empty() && (s.tls || s.credential != "none"))
        throw usage_error(
            "--tls and --credential go with --spawn; with --url the scheme says TLS, and "
            "--header 'Authorization: Bearer ...' carries a credential");
    if (s.tls_version != "1.2" && s.tls_version != "1.3")
        throw usage_error("--tls-version takes 1.2 or 1.3");
    for (const auto& h : s.headers) {
        auto colon = h.find(':');
        if (colon == 0 || colon == std::string::npos ||
            h.find_first_of("\r\n") != std::string::npos)
            throw usage_error("--header takes 'Name: value', got '" + h + "'");
    }
    return s;
}

// --header values as fields.
header_list parse_headers(const std::vector<std::string>& lines) {
    header_list out;
    for (const auto& h : lines) {
        auto colon = h.find(':');
        auto value = h.substr(colon + 1);
        value.erase(0, value.find_first_not_of(" \t"));
        out.emplace_back(h.substr(0, colon), value);
    }
    return out;
}

// The client's TLS context: one protocol version, the server's certificate verified against
// `cacert` and the URL's address, and no session cache (resumption only with --tls-resume).
std::unique_ptr<asio::ssl::context> make_client_tls(const settings& s, const std::string& cacert,
                                                    const target& t) {
    auto ctx = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
    SSL_CTX* native = ctx->native_handle();
    const int version = s.tls_version == "1.2" ? TLS1_2_VERSION : TLS1_3_VERSION;
    if (!SSL_CTX_set_min_proto_version(native, version) ||
        !SSL_CTX_set_max_proto_version(native, version))
        openssl_fail("cannot set the TLS version");
    // Each connection keeps its own last session (connection::close()); nothing is cached
    // here, so that without --tls-resume every handshake is a full one.
    SSL_CTX_set_session_cache_mode(
        native, s.tls_resume ? SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE
                             : SSL_SESS_CACHE_OFF);
    if (cacert.empty())
        ctx->set_default_verify_paths();
    else
        ctx->load_verify_file(cacert);
    ctx->set_verify_mode(asio::ssl::verify_peer);
    ctx->set_verify_callback(asio::ssl::host_name_verification(t.endpoint.address().to_string()));
    return ctx;
}

// Connects once and describes the TLS session the server agreed to (throws on failure).
asio::awaitable<std::string> probe_tls(target t, std::string) {
    connection c(co_await asio::this_coro::executor, t);
    co_await c.connect();
    auto text = c.tls_summary();
    c.close();
    co_return text;
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
    spawn_setup setup;
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
        spawned = std::make_unique<spawned_server>();
        setup = prepare_spawn(s, *spawned);
        auto args = setup.server_args;
        args.insert(args.end(), s.server_args.begin(), s.server_args.end());
        spawned->start(s.spawn, args);
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
    target t = parse_url(url);
    t.headers = setup.headers;
    for (auto& h : parse_headers(s.headers)) t.headers.push_back(std::move(h));
    t.metrics_authorization = setup.metrics_authorization;
    if (spawned) std::printf("%s\n", setup.description.c_str());
    std::unique_ptr<asio::ssl::context> tls;  // outlives every connection
    if (t.https) {
        tls = make_client_tls(s, s.cacert.empty() ? setup.cacert : s.cacert, t);
        t.tls = tls.get();
        t.resume = s.tls_resume;
        std::printf("TLS: %s; %s\n", run_one<std::string>(t, probe_tls, "").c_str(),
                    t.resume ? "reconnections offer the last session"
                             : "no session resumption (full handshakes)");
    }
    target follow = t;
    if (!s.follow_url.empty()) {
        follow = parse_url(s.follow_url);
        if (follow.https) throw usage_error("--follow-url takes an http:// URL");
        follow.headers = t.headers;
        follow.metrics_authorization = t.metrics_authorization;
        std::printf("sse-latency subscribers on %s\n", s.follow_url.c_str());
    }
    std::fflush(stdout);

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
        else if (m == "handshake")
            results.push_back(run_handshake(s, t, pid));
        else if (m == "sse-idle")
            results.push_back(run_sse_idle(s, t, pid));
        else if (m == "sse-latency")
            results.push_back(run_sse_latency(s, t, follow, pid));
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
