// The http executor: per attempt the input is POSTed to an upstream and its answer kept.
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <boost/url/parse.hpp>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "jobs/executors.hpp"

namespace buzzer::jobs {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
namespace json = boost::json;
using tcp = asio::ip::tcp;
constexpr auto tuple_awaitable = asio::as_tuple(asio::use_awaitable);

namespace {

// Idle keep-alive connections kept per kind; the most recently used are reused first.
constexpr std::size_t pool_limit = 16;
// An idle connection older than this is closed instead of reused: NATs and load balancers
// drop quiet connections without telling either side.
constexpr auto idle_lifetime = std::chrono::seconds(30);
// Largest response header block accepted from an upstream.
constexpr std::uint32_t header_limit = 64 * 1024;
// Bytes of an error answer's body quoted in the attempt's error.
constexpr std::size_t excerpt_limit = 200;

// An idle keep-alive connection. It is kept as a bare descriptor, not an Asio socket: the
// pool belongs to the job function, which may outlive the io_context that made the socket,
// and the next attempt adopts it on its own executor.
struct idle_connection {
    int fd = -1;
    bool v6 = false;
    std::chrono::steady_clock::time_point since;
};

// Whether an idle connection can carry a request: still young, not closed by the upstream,
// and with no unexpected bytes waiting.
bool usable(const idle_connection& c) {
    if (std::chrono::steady_clock::now() - c.since > idle_lifetime) return false;
    char byte = 0;
    auto n = ::recv(c.fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

// The idle connections to one upstream, shared by the copies of one job function.
class connection_pool {
  public:
    connection_pool() = default;
    connection_pool(const connection_pool&) = delete;
    connection_pool& operator=(const connection_pool&) = delete;

    ~connection_pool() {
        for (const auto& c : idle_) ::close(c.fd);
    }

    /// The most recently returned connection that is still usable, if any.
    std::optional<idle_connection> take() {
        for (;;) {
            idle_connection c;
            {
                std::lock_guard lock(mutex_);
                if (idle_.empty()) return std::nullopt;
                c = idle_.back();
                idle_.pop_back();
            }
            if (usable(c)) return c;
            ::close(c.fd);
        }
    }

    /// Keeps a connection for a later attempt; when full, the least recently used is closed.
    void put(idle_connection c) {
        int evicted = -1;
        {
            std::lock_guard lock(mutex_);
            if (idle_.size() >= pool_limit) {
                evicted = idle_.front().fd;
                idle_.erase(idle_.begin());
            }
            idle_.push_back(c);
        }
        if (evicted >= 0) ::close(evicted);
    }

  private:
    std::mutex mutex_;
    std::vector<idle_connection> idle_;  ///< oldest first
};

// What make_http_job derives from the spec once, shared by every attempt of the kind.
struct upstream {
    http_spec spec;
    std::string host;         ///< to resolve: a name or an address without brackets
    std::string port;         ///< service to resolve
    std::string host_header;  ///< the URL's authority without credentials
    std::string target;       ///< path and query
    connection_pool pool;
};

bool is_token(std::string_view s) {
    if (s.empty()) return false;
    for (unsigned char c : s) {
        bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) !=
                      std::string_view::npos;
        if (!ok) return false;
    }
    return true;
}

std::shared_ptr<upstream> make_upstream(http_spec spec) {
    auto up = std::make_shared<upstream>();
    auto parsed = boost::urls::parse_uri(spec.url);
    if (!parsed) throw std::invalid_argument("http.url: not an absolute URL: " + spec.url);
    auto u = *parsed;
    if (u.scheme_id() != boost::urls::scheme::http) {
        throw std::invalid_argument("http.url: only http:// URLs are supported (no TLS): " +
                                    spec.url);
    }
    if (u.host_type() == boost::urls::host_type::none || u.encoded_host().empty() ||
        u.host_type() == boost::urls::host_type::ipvfuture)
        throw std::invalid_argument("http.url: no usable host: " + spec.url);
    if (u.has_userinfo())
        throw std::invalid_argument(
            "http.url: credentials in the URL are not supported; "
            "configure an Authorization header instead");
    up->host = u.host_address();
    up->port = "80";
    up->host_header = std::string(u.encoded_host());
    if (u.has_port() && !u.port().empty()) {
        auto p = u.port();
        bool digits = p.size() <= 5 && p.find_first_not_of("0123456789") == std::string_view::npos;
        if (!digits || std::stoul(std::string(p)) == 0 || std::stoul(std::string(p)) > 65535)
            throw std::invalid_argument("http.url: bad port: " + spec.url);
        up->port = std::string(p);
        up->host_header += ":" + up->port;
    }
    // A fragment is never sent (RFC 9110 7.1).
    up->target = u.encoded_path().empty() ? "/" : std::string(u.encoded_path());
    if (u.has_query()) up->target += "?" + std::string(u.encoded_query());

    if (spec.method.empty()) spec.method = "POST";
    if (!is_token(spec.method))
        throw std::invalid_argument("http.method: not an HTTP method: " + spec.method);
    for (const auto& h : spec.headers) {
        if (!is_token(h.first))
            throw std::invalid_argument("http.headers: not a header name: " + h.first);
        if (h.second.find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos)
            throw std::invalid_argument("http.headers." + h.first + ": control characters");
        // These frame the request or identify the attempt; the executor owns them.
        for (std::string_view reserved :
             {"Content-Length", "Transfer-Encoding", "X-Buzzer-Operation-Id", "X-Buzzer-Attempt"}) {
            if (beast::iequals(h.first, reserved))
                throw std::invalid_argument("http.headers: " + h.first + " is set by Buzzer");
        }
    }
    up->spec = std::move(spec);
    return up;
}

bhttp::request<bhttp::string_body> make_request(const upstream& up, const job& j) {
    bhttp::request<bhttp::string_body> req;
    req.method_string(up.spec.method);
    req.target(up.target);
    req.version(11);
    req.set(bhttp::field::host, up.host_header);
    req.set(bhttp::field::user_agent, "buzzer");
    req.set(bhttp::field::content_type, "application/json");
    // Configured headers come after the defaults so they can replace Host, User-Agent, etc.
    for (const auto& h : up.spec.headers) req.set(h.first, h.second);
    req.set("X-Buzzer-Operation-Id", j.id());
    req.set("X-Buzzer-Attempt", std::to_string(j.attempt()));
    req.body() = j.input_text();
    req.prepare_payload();
    return req;
}

[[noreturn]] void fail(const std::string& detail, bool retryable) {
    throw job_error(detail, retryable);
}

// Cancellation and timeouts must stay operation_aborted for the scheduler; other errors
// become the attempt's failure.
void rethrow_if_aborted(const boost::system::error_code& ec) {
    if (ec == asio::error::operation_aborted) throw boost::system::system_error(ec);
}

// The start of an error answer's body, cut at a UTF-8 character boundary.
std::string excerpt(std::string_view body) {
    if (body.size() > excerpt_limit) {
        std::size_t n = excerpt_limit;
        while (n > 0 && (static_cast<unsigned char>(body[n]) & 0xC0) == 0x80) --n;
        body = body.substr(0, n);
    }
    while (!body.empty() && std::isspace(static_cast<unsigned char>(body.back())))
        body.remove_suffix(1);
    return std::string(body);
}

std::string answered(unsigned status, std::string_view body) {
    std::string s = "upstream answered " + std::to_string(status);
    auto e = excerpt(body);
    if (!e.empty()) s += ": " + e;
    return s;
}

// Turns a complete response into the attempt's outcome.
json::value conclude(bhttp::response<bhttp::string_body>& res, job& j) {
    unsigned status = res.result_int();
    if (status >= 200 && status < 300) {
        auto type = res[bhttp::field::content_type];
        j.set_result(std::move(res.body()),
                     type.empty() ? "application/octet-stream" : std::string(type));
        return nullptr;
    }
    if (status >= 300 && status < 400) {
        auto location = res[bhttp::field::location];
        if (location.empty())
            fail("upstream answered " + std::to_string(status) +
                     " without a Location; redirects are not followed",
                 false);
        fail("upstream redirected (" + std::to_string(status) + ") to " + std::string(location) +
                 "; redirects are not followed",
             false);
    }
    if (status >= 400 && status < 500) fail(answered(status, res.body()), false);
    fail(answered(status, res.body()), true);
}

// Adopts an idle descriptor into `stream`; false (and the descriptor closed) if it cannot.
bool adopt(beast::tcp_stream& stream, const idle_connection& c) {
    boost::system::error_code ec;
    stream.socket().assign(c.v6 ? tcp::v6() : tcp::v4(), c.fd, ec);
    if (ec) ::close(c.fd);
    return !ec;
}

// Gives the connection of `stream` to the pool.
void keep(upstream& up, beast::tcp_stream& stream) {
    boost::system::error_code ec;
    auto local = stream.socket().local_endpoint(ec);
    if (ec) return;
    int fd = stream.socket().release(ec);
    if (ec) return;
    up.pool.put({fd, local.protocol() == tcp::v6(), std::chrono::steady_clock::now()});
}

// A host name lookup that a cancel or a timeout can interrupt.
struct lookup {
    explicit lookup(const asio::any_io_executor& ex) : resolver(ex), done(ex) {
        done.expires_at(std::chrono::steady_clock::time_point::max());
    }
    tcp::resolver resolver;
    asio::steady_timer done;  ///< cancelled when the lookup completes
    bool finished = false;
    boost::system::error_code ec;
    tcp::resolver::results_type results;
};

// Resolves the upstream's host. Asio's resolver ignores per-operation cancellation (the lookup
// is a getaddrinfo call on a private thread), so the attempt waits on a timer that the
// lookup's completion cancels: a cancel or timeout ends that wait at once and the lookup
// finishes on its own. The completion runs on the attempt's executor (the job's strand).
asio::awaitable<tcp::resolver::results_type> resolve(std::shared_ptr<upstream> up) {
    auto ex = co_await asio::this_coro::executor;
    auto l = std::make_shared<lookup>(ex);
    auto on_resolved = [l](boost::system::error_code ec, tcp::resolver::results_type r) {
        l->finished = true;
        l->ec = ec;
        l->results = std::move(r);
        l->done.cancel();
    };
    l->resolver.async_resolve(up->host, up->port, asio::bind_executor(ex, std::move(on_resolved)));
    co_await l->done.async_wait(tuple_awaitable);
    if (!l->finished) throw boost::system::system_error(asio::error::operation_aborted);
    rethrow_if_aborted(l->ec);
    if (l->ec) fail("cannot resolve upstream host " + up->host + ": " + l->ec.message(), true);
    co_return std::move(l->results);
}

// One attempt: the request on a pooled connection, or on a fresh one when none is idle or
// the pooled one turns out dead before answering anything.
asio::awaitable<json::value> call_upstream(std::shared_ptr<upstream> up, job& j) {
    auto ex = co_await asio::this_coro::executor;
    const auto req = make_request(*up, j);
    const bool head = req.method() == bhttp::verb::head;
    for (int pass = 0;; ++pass) {
        std::optional<idle_connection> idle;
        if (pass == 0) idle = up->pool.take();
        // Destroying the stream closes its socket: whatever ends this pass early (an error,
        // cancellation, a timeout) never leaves a half-used connection behind.
        beast::tcp_stream stream(ex);
        const bool reused = idle && adopt(stream, *idle);
        if (!reused) {
            auto endpoints = co_await resolve(up);
            auto connected = co_await stream.async_connect(endpoints, tuple_awaitable);
            auto ec = std::get<0>(connected);
            rethrow_if_aborted(ec);
            if (ec)
                fail("cannot connect to upstream " + up->host_header + ": " + ec.message(), true);
            // Commands run by the exec executor must not inherit the connection.
            ::fcntl(stream.socket().native_handle(), F_SETFD, FD_CLOEXEC);
        }

        auto written = co_await bhttp::async_write(stream, req, tuple_awaitable);
        auto ec = std::get<0>(written);
        rethrow_if_aborted(ec);
        if (ec && reused) continue;  // the upstream closed it while idle: once more, fresh
        if (ec) fail("upstream connection failed while sending: " + ec.message(), true);

        // Interim 1xx answers are skipped; each response gets its own parser.
        beast::flat_buffer buffer;
        std::optional<bhttp::response_parser<bhttp::string_body>> parser;
        bool interim = false;
        for (;;) {
            parser.emplace();
            parser->header_limit(header_limit);
            parser->body_limit(up->spec.max_body);
            if (head) parser->skip(true);
            auto read = co_await bhttp::async_read(stream, buffer, *parser, tuple_awaitable);
            ec = std::get<0>(read);
            if (ec) break;
            auto status = parser->get().result_int();
            if (status < 100 || status >= 200 || status == 101) break;
            interim = true;
        }
        rethrow_if_aborted(ec);
        const bool started = interim || parser->got_some() || buffer.size() > 0;
        if (ec && !started && reused) continue;
        if (ec == bhttp::error::body_limit)
            fail("upstream response body exceeds max_body (" + std::to_string(up->spec.max_body) +
                     " bytes)",
                 true);
        if (ec == bhttp::error::header_limit)
            fail("upstream response header exceeds " + std::to_string(header_limit) + " bytes",
                 true);
        if (ec && !started) {
            fail(ec == bhttp::error::end_of_stream
                     ? std::string("upstream closed the connection before answering")
                     : "upstream connection failed before answering: " + ec.message(),
                 true);
        }
        if (ec == bhttp::error::partial_message || ec == bhttp::error::end_of_stream)
            fail("upstream closed the connection in the middle of its answer", true);
        if (ec == asio::error::connection_reset || ec == asio::error::broken_pipe ||
            ec == asio::error::eof)
            fail("upstream connection failed in the middle of its answer: " + ec.message(), true);
        if (ec) fail("upstream sent a malformed answer: " + ec.message(), true);

        // A complete answer: the connection can serve another attempt unless the upstream
        // said otherwise (Connection: close, HTTP/1.0, body delimited by eof) or sent more.
        if (parser->keep_alive() && buffer.size() == 0) keep(*up, stream);
        auto res = parser->release();
        co_return conclude(res, j);
    }
}

}  // namespace

job_function make_http_job(http_spec spec) {
    auto up = make_upstream(std::move(spec));
    // Not a coroutine lambda: the coroutine gets the shared state by value.
    return [up](job& j) { return call_upstream(up, j); };
}

}  // namespace buzzer::jobs
