#include "http/server.hpp"

#include <sys/socket.h>

#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cerrno>
#include <mutex>
#include <optional>
#include <unordered_set>

#include "core/log.hpp"
#include "http/head.hpp"
#include "http/read_error.hpp"
#include "http/tls_context.hpp"
#include "http/tls_stream.hpp"

namespace buzzer::http {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = asio::ip::tcp;
using asio::use_awaitable;
constexpr auto tuple_awaitable = asio::as_tuple(asio::use_awaitable);

namespace {

// What stop() may touch of a live connection; only used on the connection's executor (one
// thread runs it).
struct connection_state {
    asio::any_io_executor executor;
    tcp::socket* socket = nullptr;  ///< of the connection's stream, while it lives
    bool idle = true;
    bool closing = false;
};

// Calls `fn` once the client's side of `socket` has ended (end of file, or an error), and with
// `any_byte` also when it sends anything (a client that was not to send more). Only a pending
// reactor operation, no buffer; not called once the wait is cancelled (the socket closed or
// cancel()ed), and then `socket` is not touched.
void on_client_end(tcp::socket& socket, bool any_byte, std::function<void()> fn) {
    socket.async_wait(tcp::socket::wait_read, [&socket, any_byte,
                                               fn = std::move(fn)](boost::system::error_code ec) {
        if (ec == asio::error::operation_aborted) return;
        if (!ec && !any_byte) {
            // Readable with bytes (a pipelined request, left for the session): not the end.
            char c;
            const auto n = ::recv(socket.native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
            if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)))
                return;
        }
        fn();
    });
}

// What the session does differently over each kind of stream, as overloads: no virtual call
// on the plain path.
tcp::socket& socket_of(beast::tcp_stream& s) { return s.socket(); }
tcp::socket& socket_of(tls_stream& s) { return s.socket(); }

void watch_client_end(beast::tcp_stream& s, bool any_byte, std::function<void()> fn) {
    on_client_end(s.socket(), any_byte, std::move(fn));
}
void watch_client_end(tls_stream& s, bool any_byte, std::function<void()> fn) {
    // Over TLS a close_notify is bytes too: the stream tells it from data.
    s.watch_client_end(any_byte, std::move(fn));
}

void cancel_watch(beast::tcp_stream& s) {
    boost::system::error_code ignored;
    s.socket().cancel(ignored);
}
void cancel_watch(tls_stream& s) { s.cancel_watch(); }

template <class Stream>
constexpr bool is_tls = std::is_same_v<Stream, tls_stream>;

// The client's address without the port; an IPv4 client of an IPv6 socket as IPv4.
std::string remote_of(tcp::socket& socket) {
    boost::system::error_code ec;
    auto ep = socket.remote_endpoint(ec);
    if (ec) return {};
    auto address = ep.address();
    if (address.is_v6() && address.to_v6().is_v4_mapped())
        address = asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6());
    return address.to_string();
}

// The SSE writer: chunks over the connection, with a deadline on each write.
template <class Stream>
class chunk_writer final : public body_writer {
  public:
    chunk_writer(Stream& s, std::chrono::milliseconds timeout) : stream_(s), timeout_(timeout) {}

    asio::awaitable<void> write(std::string_view data) override {
        stream_.expires_after(timeout_);
        co_await asio::async_write(stream_, bhttp::make_chunk(asio::buffer(data)), use_awaitable);
    }

    void watch_closed(std::function<void()> fn) override {
        // A byte or the end of file: either way the client is done. Closing the socket at the
        // end of the stream cancels the wait.
        watch_client_end(stream_, true, std::move(fn));
    }

    void abort() override { stream_.close(); }

  private:
    Stream& stream_;
    std::chrono::milliseconds timeout_;
};

// The origin form (/path?query) of a request target; an absolute-form one
// (http://host/path?query, which servers must accept) loses its scheme and authority.
std::string origin_form(std::string_view target) {
    auto starts = [&](std::string_view prefix) {
        return target.size() >= prefix.size() && iequals(target.substr(0, prefix.size()), prefix);
    };
    if (!starts("http://") && !starts("https://")) return std::string(target);
    auto rest = target.substr(target.find("://") + 3);
    auto start = rest.find_first_of("/?");
    if (start == std::string_view::npos) return "/";
    return (rest[start] == '/' ? "" : "/") + std::string(rest.substr(start));
}

// `target`: the request's target in origin form.
request to_request(bhttp::request<bhttp::string_body>&& in, std::string target) {
    request r;
    r.method = std::string(in.method_string());
    r.target = std::move(target);
    auto q = r.target.find('?');
    r.path = r.target.substr(0, q);
    if (q != std::string::npos) r.query = r.target.substr(q + 1);
    r.headers.reserve(8);
    for (const auto& f : in)
        r.headers.push_back({std::string(f.name_string()), std::string(f.value())});
    r.body = std::move(in.body());
    return r;
}

}  // namespace

struct server::impl : std::enable_shared_from_this<impl> {
    impl(asio::io_context& io, std::vector<asio::io_context*> contexts, const router& routes,
         server_settings s)
        : io(io),
          contexts(std::move(contexts)),
          routes(routes),
          settings(s),
          accept_strand(asio::make_strand(io)),
          acceptor(accept_strand) {}

    asio::io_context& io;
    std::vector<asio::io_context*> contexts;  ///< where connections run, in turn
    std::size_t next_context = 0;             ///< on the accept strand
    const router& routes;
    server_settings settings;
    server_stats stats;
    asio::strand<asio::io_context::executor_type> accept_strand;
    tcp::acceptor acceptor;
    std::mutex mutex;
    std::unordered_set<std::shared_ptr<connection_state>> live;
    std::atomic<bool> stopping{false};
    // On the accept strand: when refusals were last logged, and how many came since.
    std::optional<std::chrono::steady_clock::time_point> refusals_logged;
    std::uint64_t refused_unlogged = 0;
    // The TLS context new connections take; none: plain HTTP.
    std::mutex tls_mutex;
    tls_context tls;
    // When failed handshakes were last logged, and how many came since (any thread).
    std::mutex handshake_log_mutex;
    std::optional<std::chrono::steady_clock::time_point> handshakes_logged;
    std::uint64_t handshakes_unlogged = 0;

    void count(int status) {
        if (status < 300)
            stats.responses_2xx.fetch_add(1, std::memory_order_relaxed);
        else if (status < 400)
            stats.responses_3xx.fetch_add(1, std::memory_order_relaxed);
        else if (status < 500)
            stats.responses_4xx.fetch_add(1, std::memory_order_relaxed);
        else
            stats.responses_5xx.fetch_add(1, std::memory_order_relaxed);
    }

    // Counts a connection closed at max_connections, and says so in the log at most once
    // every few seconds, with the count since the last line: a flood of connections must not
    // become a flood of lines. (Refusals after the last line show in the metric.)
    void refused() {
        stats.connections_refused.fetch_add(1, std::memory_order_relaxed);
        ++refused_unlogged;
        const auto now = std::chrono::steady_clock::now();
        if (refusals_logged && now - *refusals_logged < std::chrono::seconds(5)) return;
        core::log(core::level::warn,
                  "max_connections (" + std::to_string(settings.max_connections) +
                      ") reached: " + std::to_string(refused_unlogged) +
                      (refused_unlogged == 1 ? " new connection" : " new connections") +
                      " closed since the last report");
        refusals_logged = now;
        refused_unlogged = 0;
    }

    asio::awaitable<void> accept_loop() {
        for (;;) {
            auto [ec, socket] = co_await acceptor.async_accept(
                contexts[next_context]->get_executor(), tuple_awaitable);
            next_context = (next_context + 1) % contexts.size();
            if (stopping) co_return;
            if (ec) {
                if (ec == asio::error::operation_aborted) co_return;
                // Out of descriptors or a transient error: back off briefly instead of spinning.
                asio::steady_timer t(accept_strand, std::chrono::milliseconds(50));
                co_await t.async_wait(tuple_awaitable);
                continue;
            }
            if (stats.connections.load() >= static_cast<std::int64_t>(settings.max_connections)) {
                boost::system::error_code ignored;
                socket.close(ignored);
                refused();
                continue;
            }
            boost::system::error_code ignored;
            socket.set_option(tcp::no_delay(true), ignored);
            auto state = std::make_shared<connection_state>();
            state->executor = socket.get_executor();
            {
                std::lock_guard lock(mutex);
                live.insert(state);
            }
            stats.connections.fetch_add(1);
            auto done = [self = shared_from_this(), state](std::exception_ptr e) {
                self->session_ended(e, state);
            };
            auto ex = socket.get_executor();
            if (auto tls = current_tls()) {
                // The session holds a reference of the context: a reload replaces it for new
                // connections only.
                std::optional<tls_stream> stream;
                try {
                    stream.emplace(std::move(socket), tls.get());
                } catch (const std::exception&) {
                    done(std::current_exception());  // logged; the socket closed with it
                    continue;
                }
                asio::co_spawn(ex, run_session(std::move(*stream), state), std::move(done));
            } else {
                asio::co_spawn(ex, run_session(beast::tcp_stream(std::move(socket)), state),
                               std::move(done));
            }
        }
    }

    void session_ended(const std::exception_ptr& e,
                       const std::shared_ptr<connection_state>& state) {
        if (e) {
            try {
                std::rethrow_exception(e);
            } catch (const boost::system::system_error&) {
                // A client that went away mid-response: nothing to report.
            } catch (const std::exception& x) {
                core::log(core::level::error, std::string("connection: ") + x.what());
            } catch (...) {
                // Not a std::exception (a stream body's `throw 42`): it ends this connection,
                // never the process.
                core::log(core::level::error, "connection: an exception of unknown type");
            }
        }
        {
            std::lock_guard lock(mutex);
            live.erase(state);
        }
        stats.connections.fetch_sub(1);
    }

    tls_context current_tls() {
        std::lock_guard lock(tls_mutex);
        return tls;
    }

    // Answers a failed read of a request with its problem, if the client is still there to
    // read one; the connection closes after it either way.
    template <class Stream>
    asio::awaitable<void> fail_read(Stream& stream, boost::system::error_code ec, read_phase phase,
                                    std::string_view instance) {
        auto problem = read_problem(ec, phase, settings.header_limit, settings.body_limit);
        if (problem) co_await send_error(stream, *problem, instance);
    }

    template <class Stream>
    asio::awaitable<void> send_error(Stream& stream, const http_error& e, std::string_view path) {
        response r = problem_response(e, path);
        r.close = true;
        co_await write_response(stream, r, false, false);
    }

    template <class Stream>
    asio::awaitable<void> write_response(Stream& stream, response& r, bool keep_alive, bool head) {
        // The head is written out here and sent with the body in one gather write: Beast's
        // serializer walks a concatenation of buffer sequences that costs more than the
        // response itself for the small answers of this API.
        std::string out = response_head(r, keep_alive);
        count(r.status);
        stream.expires_after(settings.write_timeout);
        const bool bodyless = head || r.status == 204 || r.status == 304;
        std::array<asio::const_buffer, 2> buffers{
            asio::buffer(out), bodyless ? asio::const_buffer() : asio::buffer(r.body)};
        co_await asio::async_write(stream, buffers, use_awaitable);
    }

    // The head of a chunked response, which ends the connection: the body's end is the
    // connection's.
    template <class Stream>
    asio::awaitable<void> write_stream_head(Stream& stream, response& r) {
        std::string out = response_head(r, false);
        count(r.status);
        stream.expires_after(settings.write_timeout);
        co_await asio::async_write(stream, asio::buffer(out), use_awaitable);
    }

    // A streamed body (SSE). Its coroutine frames stay small: an idle stream holds this
    // frame, the session's and the body's.
    template <class Stream>
    asio::awaitable<void> write_stream(Stream& stream, response& r) {
        co_await write_stream_head(stream, r);
        r.headers = {};
        stats.streams.fetch_add(1);
        struct guard {
            server_stats& s;
            ~guard() { s.streams.fetch_sub(1); }
        } g{stats};
        chunk_writer<Stream> writer(stream, settings.write_timeout);
        {
            // The body coroutine owns copies of what it needs: the function can go now.
            auto body = std::move(r.stream);
            r = response{};
            auto run = body(writer);
            body = nullptr;
            co_await std::move(run);
        }
        stream.expires_after(settings.write_timeout);
        co_await asio::async_write(stream, bhttp::make_chunk_last(), use_awaitable);
    }

    // The answer to a request: the before-hook's, the route's, or a problem; then the
    // after-hook sees it, whichever it is.
    asio::awaitable<response> dispatch(request& req) {
        stats.requests.fetch_add(1, std::memory_order_relaxed);
        std::optional<http_error> error;
        response res;
        try {
            if (auto early = routes.run_before(req)) {
                res = std::move(*early);
            } else {
                auto m = routes.find(req.method, req.path);
                if (!m.target) {
                    if (!m.allow.empty())
                        throw http_error{405,
                                         "method-not-allowed",
                                         "this resource accepts " + m.allow,
                                         {},
                                         {{"Allow", m.allow}}};
                    throw http_error{404, "not-found", "no resource at " + req.path};
                }
                req.params = std::move(m.params);
                res = co_await (*m.target)(req);
            }
        } catch (const http_error& e) {
            error = e;
        } catch (const std::exception& e) {
            error = routes.problem_for(e);
            core::log(error ? core::level::warn : core::level::error,
                      "handler " + req.method + " " + req.path + ": " + e.what());
            if (!error)
                error =
                    http_error{500, "internal-error", "the server failed to answer this request"};
        } catch (...) {
            core::log(core::level::error,
                      "handler " + req.method + " " + req.path + ": an exception of unknown type");
            error = http_error{500, "internal-error", "the server failed to answer this request"};
        }
        if (error) res = problem_response(*error, req.path);
        after_hook(req, res);
        co_return res;
    }

    // The router's after-hook on `res`; one that throws leaves a 500 in its place.
    void after_hook(const request& req, response& res) {
        try {
            routes.run_after(req, res);
            return;
        } catch (const std::exception& e) {
            core::log(core::level::error,
                      "after-hook " + req.method + " " + req.path + ": " + e.what());
        } catch (...) {
            core::log(core::level::error, "after-hook " + req.method + " " + req.path +
                                              ": an exception of unknown type");
        }
        res = problem_response(
            http_error{500, "internal-error", "the server failed to answer this request"},
            req.path);
    }

    // Feeds the bytes in `buffer` to `parser` up to the end of the header, or, once the header
    // is done, of the body (consuming them); stops early when more bytes are needed. Returns the
    // parser's error (never need_more) and the bytes consumed.
    static std::pair<boost::system::error_code, std::size_t> parse_buffered(
        bhttp::request_parser<bhttp::string_body>& parser, beast::flat_buffer& buffer) {
        boost::system::error_code ec;
        std::size_t used = 0;
        const bool header = !parser.is_header_done();
        while (buffer.size() > 0 && !parser.is_done() && (!header || !parser.is_header_done())) {
            std::size_t n = parser.put(buffer.data(), ec);
            buffer.consume(n);
            used += n;
            if (ec == bhttp::error::need_more) ec = {};
            if (ec || n == 0) break;
        }
        return {ec, used};
    }

    // Runs `read()`, a read of `stream`, with a deadline of its own. The stream's deadline
    // would close the socket when it passes; this one only cancels the read, which then ends
    // with beast::error::timeout, so that the client can still be sent its 408.
    template <class Stream, class Read>
    static asio::awaitable<std::tuple<boost::system::error_code, std::size_t>> read_within(
        Stream& stream, std::chrono::milliseconds limit, Read read) {
        stream.expires_never();
        // Tells a timer that fires just as the read completes that it is too late.
        auto state = std::make_shared<int>(0);  // 1: read done, 2: timed out
        asio::steady_timer deadline(stream.get_executor(), limit);
        deadline.async_wait([state, &stream](boost::system::error_code ec) {
            if (ec || *state != 0) return;
            *state = 2;
            boost::system::error_code ignored;
            socket_of(stream).cancel(ignored);
        });
        auto [ec, n] = co_await read();
        if (*state == 2) ec = beast::error::timeout;
        *state = 1;
        deadline.cancel();
        co_return std::tuple{ec, n};
    }

    // A request read and checked, and how to answer it.
    struct incoming {
        request req;
        bool keep_alive = false;
        bool head = false;
    };

    // Reads one request whose first bytes are in `buffer` (or on their way). Empty when the
    // connection is to close; an error response, if one is due, has been sent. A coroutine of
    // its own so that the parser is not part of the session's frame, which an event stream
    // keeps for its whole life.
    template <class Stream>
    asio::awaitable<std::optional<incoming>> read_request(Stream& stream,
                                                          beast::flat_buffer& buffer) {
        bhttp::request_parser<bhttp::string_body> parser;
        parser.header_limit(static_cast<std::uint32_t>(settings.header_limit));
        parser.body_limit(settings.body_limit);
        // Most requests arrive whole with their first bytes: what the buffer holds is parsed
        // here, and only what is missing is read (each asynchronous read costs a round through
        // the event loop even when it has nothing to wait for).
        auto [hec, hn] = parse_buffered(parser, buffer);
        if (!hec && !parser.is_header_done()) {
            auto [rec, rn] = co_await read_within(stream, settings.header_timeout, [&] {
                return bhttp::async_read_header(stream, buffer, parser, tuple_awaitable);
            });
            hec = rec;
            hn += rn;
        }
        if (hec) {
            // A Content-Length over the limit fails the header as it completes: only then is
            // the target known, and the problem's instance.
            std::string at;
            if (hec == bhttp::error::body_limit) {
                auto origin = origin_form(parser.get().target());
                at = origin.substr(0, origin.find('?'));
            }
            co_await fail_read(stream, hec, read_phase::header, at);
            co_return std::nullopt;
        }
        if (hn > settings.header_limit) {
            co_await fail_read(stream, bhttp::error::header_limit, read_phase::header, "");
            co_return std::nullopt;
        }
        auto& head = parser.get();
        auto origin = origin_form(head.target());
        std::string path(origin.substr(0, origin.find('?')));
        if (head.version() != 11 && head.version() != 10) {
            http_error err{505, "http-version-not-supported", "use HTTP/1.1"};
            co_await send_error(stream, err, path);
            co_return std::nullopt;
        }
        if (auto len = parser.content_length(); len && *len > settings.body_limit) {
            co_await fail_read(stream, bhttp::error::body_limit, read_phase::body, path);
            co_return std::nullopt;
        }
        boost::system::error_code bec;
        if (!parser.is_done()) bec = parse_buffered(parser, buffer).first;
        if (!bec && !parser.is_done()) {
            if (bhttp::token_list(head[bhttp::field::expect]).exists("100-continue")) {
                response interim;
                interim.status = 100;
                std::string out = response_head(interim, true);
                stream.expires_after(settings.write_timeout);
                co_await asio::async_write(stream, asio::buffer(out), use_awaitable);
            }
            auto [rec, rn] = co_await read_within(stream, settings.idle_timeout, [&] {
                return bhttp::async_read(stream, buffer, parser, tuple_awaitable);
            });
            bec = rec;
        }
        if (bec) {
            co_await fail_read(stream, bec, read_phase::body, path);
            co_return std::nullopt;
        }
        std::optional<incoming> in(std::in_place);
        in->keep_alive = head.keep_alive();
        in->head = head.method() == bhttp::verb::head;
        in->req = to_request(parser.release(), std::move(origin));
        co_return in;
    }

    // Serves requests until the connection is to close, or until a handler answers with a
    // stream: that response is returned for the session to write. The read buffer, the request
    // and the parser live here, not in the frame that an event stream keeps.
    template <class Stream>
    asio::awaitable<std::optional<response>> serve(Stream& stream, connection_state& state) {
        beast::flat_buffer buffer(std::max<std::size_t>(settings.header_limit * 2, 64 * 1024));
        const std::string remote = remote_of(socket_of(stream));
        for (bool first = true;; first = false) {
            state.idle = true;
            if (state.closing || stopping) break;
            if (buffer.size() == 0) {
                // Wait for the first byte of the next request. A new connection has the header
                // timeout for its first request (a client that connects and sends nothing is
                // not kept for the whole idle timeout); a kept-alive one the idle timeout.
                stream.expires_after(first
                                         ? std::min(settings.header_timeout, settings.idle_timeout)
                                         : settings.idle_timeout);
                auto [ec, n] =
                    co_await stream.async_read_some(buffer.prepare(1024), tuple_awaitable);
                if (ec) break;
                buffer.commit(n);
            }
            state.idle = false;

            std::optional<incoming> in = co_await read_request(stream, buffer);
            if (!in) break;
            in->req.remote = remote;
            in->req.secure = is_tls<Stream>;
            // Nothing is read while the handler runs: pipelined requests wait in `buffer`.
            stream.expires_never();
            bool watching = false;
            in->req.on_client_gone = [&stream, &watching](std::function<void()> fn) {
                watching = true;
                watch_client_end(stream, false, std::move(fn));
            };
            response res = co_await dispatch(in->req);
            if (watching) cancel_watch(stream);
            if (res.stream && !in->head) {
                std::optional<response> streamed(std::move(res));
                co_return streamed;
            }
            bool keep_alive = in->keep_alive && !res.close && !state.closing && !stopping;
            co_await write_response(stream, res, keep_alive, in->head);
            if (!keep_alive) break;
        }
        co_return std::nullopt;
    }

    // Says that TLS handshakes failed, at most once every few seconds with the count since the
    // last line, and at debug level: scanners and clients that speak plain HTTP to the port
    // must not fill the log.
    void handshake_failed(boost::system::error_code ec, const std::string& remote) {
        stats.tls_handshakes_failed.fetch_add(1, std::memory_order_relaxed);
        std::uint64_t unlogged = 0;
        {
            std::lock_guard lock(handshake_log_mutex);
            ++handshakes_unlogged;
            const auto now = std::chrono::steady_clock::now();
            if (handshakes_logged && now - *handshakes_logged < std::chrono::seconds(5)) return;
            handshakes_logged = now;
            unlogged = std::exchange(handshakes_unlogged, 0);
        }
        core::log(core::level::debug, "TLS handshake failed (" + std::to_string(unlogged) +
                                          " since the last report), the last from " + remote +
                                          ": " + ec.message());
    }

    template <class Stream>
    asio::awaitable<void> run_session(Stream stream, std::shared_ptr<connection_state> state) {
        state->socket = &socket_of(stream);
        struct detach {
            std::shared_ptr<connection_state>& s;
            ~detach() { s->socket = nullptr; }
        } detach_guard{state};

        if constexpr (is_tls<Stream>) {
            // The handshake has the time of a request's headers.
            stream.expires_after(std::min(settings.header_timeout, settings.idle_timeout));
            auto [ec] = co_await stream.async_handshake(tuple_awaitable);
            if (ec) {
                if (ec != asio::error::operation_aborted)
                    handshake_failed(ec, remote_of(stream.socket()));
                co_return;
            }
        }
        std::optional<response> streamed = co_await serve(stream, *state);
        if (streamed) co_await write_stream(stream, *streamed);
        if constexpr (is_tls<Stream>) {
            // close_notify, as far as it goes out at once: the client's is not waited for.
            stream.expires_after(std::min<std::chrono::milliseconds>(settings.write_timeout,
                                                                     std::chrono::seconds(1)));
            co_await stream.async_shutdown(tuple_awaitable);
        }
        boost::system::error_code ignored;
        socket_of(stream).shutdown(tcp::socket::shutdown_send, ignored);
        stream.close();
    }
};

server::server(asio::io_context& io, std::vector<asio::io_context*> connection_contexts,
               const router& routes, server_settings settings)
    : impl_(std::make_shared<impl>(io,
                                   connection_contexts.empty() ? std::vector<asio::io_context*>{&io}
                                                               : std::move(connection_contexts),
                                   routes, settings)) {}

server::~server() = default;

std::string server::listen(const std::string& host_port) {
    auto colon = host_port.rfind(':');
    if (colon == std::string::npos)
        throw std::runtime_error("listen address must be HOST:PORT: " + host_port);
    std::string host = host_port.substr(0, colon);
    std::string port_text = host_port.substr(colon + 1);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
        host = host.substr(1, host.size() - 2);
    if (host == "localhost") host = "127.0.0.1";
    if (host.empty()) host = "0.0.0.0";
    unsigned long port = 0;
    try {
        std::size_t used = 0;
        port = std::stoul(port_text, &used);
        if (used != port_text.size() || port > 65535) throw std::out_of_range("port");
    } catch (const std::exception&) {
        throw std::runtime_error("invalid port in listen address: " + host_port);
    }
    boost::system::error_code ec;
    auto address = asio::ip::make_address(host, ec);
    if (ec) throw std::runtime_error("invalid host in listen address: " + host_port);
    tcp::endpoint ep(address, static_cast<unsigned short>(port));
    auto& a = impl_->acceptor;
    a.open(ep.protocol());
    a.set_option(asio::socket_base::reuse_address(true));
    a.bind(ep, ec);
    if (ec) throw std::runtime_error("cannot listen on " + host_port + ": " + ec.message());
    a.listen(asio::socket_base::max_listen_connections);
    auto bound = a.local_endpoint();
    std::string shown = bound.address().to_string();
    if (bound.address().is_v6()) shown = "[" + shown + "]";
    return shown + ":" + std::to_string(bound.port());
}

void server::start() {
    auto self = impl_;
    asio::co_spawn(impl_->accept_strand, impl_->accept_loop(), [self](std::exception_ptr e) {
        if (e) core::log(core::level::error, "acceptor stopped with an error");
    });
}

void server::stop() {
    impl_->stopping = true;
    auto self = impl_;
    asio::post(impl_->accept_strand, [self] {
        boost::system::error_code ignored;
        self->acceptor.close(ignored);
    });
    // Idle connections close now; busy ones see `closing` after their current response.
    std::lock_guard lock(impl_->mutex);
    for (const auto& state : impl_->live) {
        asio::post(state->executor, [state] {
            state->closing = true;
            if (state->idle && state->socket) {
                boost::system::error_code ignored;
                state->socket->close(ignored);
            }
        });
    }
}

void server::close_all() {
    std::lock_guard lock(impl_->mutex);
    for (const auto& state : impl_->live) {
        asio::post(state->executor, [state] {
            state->closing = true;
            if (state->socket) {
                boost::system::error_code ignored;
                state->socket->close(ignored);
            }
        });
    }
}

void server::use_tls(const std::string& cert_file, const std::string& key_file) {
    auto ctx = make_tls_context(cert_file, key_file);
    std::lock_guard lock(impl_->tls_mutex);
    impl_->tls = std::move(ctx);
}

bool server::secure() const {
    std::lock_guard lock(impl_->tls_mutex);
    return impl_->tls != nullptr;
}

std::int64_t server::connections() const { return impl_->stats.connections.load(); }

server_stats& server::stats() { return impl_->stats; }

}  // namespace buzzer::http
