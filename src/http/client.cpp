#include "http/client.hpp"

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
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>

namespace buzzer::http {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
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

[[noreturn]] void fail(const std::string& detail, bool retryable) {
    throw upstream_error(detail, retryable);
}

// Cancellation and timeouts must stay operation_aborted for the scheduler; other errors
// become the attempt's failure.
void rethrow_if_aborted(const boost::system::error_code& ec) {
    if (ec == asio::error::operation_aborted) throw boost::system::system_error(ec);
}

}  // namespace

struct upstream_client::impl {
    std::string host;
    std::string port;
    std::string host_header;
    std::size_t max_body;
    connection_pool pool;
};

namespace {

using upstream = upstream_client::impl;

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

bhttp::request<bhttp::string_body> make_request(const upstream& up, upstream_request r) {
    bhttp::request<bhttp::string_body> req;
    req.method_string(r.method);
    req.target(r.target);
    req.version(11);
    req.set(bhttp::field::host, up.host_header);
    req.set(bhttp::field::user_agent, "buzzer");
    for (const auto& h : r.headers) req.set(h.name, h.value);
    req.body() = std::move(r.body);
    req.prepare_payload();
    return req;
}

// One attempt: the request on a pooled connection, or on a fresh one when none is idle or
// the pooled one turns out dead before answering anything.
asio::awaitable<upstream_answer> call_upstream(std::shared_ptr<upstream> up, upstream_request r) {
    auto ex = co_await asio::this_coro::executor;
    const auto req = make_request(*up, std::move(r));
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
            parser->body_limit(up->max_body);
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
            fail("upstream response body exceeds max_body (" + std::to_string(up->max_body) +
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
        upstream_answer answer;
        answer.status = res.result_int();
        answer.content_type = std::string(res[bhttp::field::content_type]);
        answer.location = std::string(res[bhttp::field::location]);
        answer.body = std::move(res.body());
        co_return answer;
    }
}

}  // namespace

upstream_client::upstream_client(std::string host, std::string port, std::string host_header,
                                 std::size_t max_body)
    : impl_(std::make_shared<impl>()) {
    impl_->host = std::move(host);
    impl_->port = std::move(port);
    impl_->host_header = std::move(host_header);
    impl_->max_body = max_body;
}

upstream_client::~upstream_client() = default;

asio::awaitable<upstream_answer> upstream_client::call(upstream_request req) {
    return call_upstream(impl_, std::move(req));
}

const std::string& upstream_client::host_header() const { return impl_->host_header; }

}  // namespace buzzer::http
