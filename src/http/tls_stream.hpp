// A server-side TLS stream that drives OpenSSL directly on the connection's non-blocking
// socket: OpenSSL reads and writes the socket itself, and the stream waits for readiness when
// it wants more. It holds no buffers of its own, and OpenSSL's go back to the allocator while
// empty (SSL_MODE_RELEASE_BUFFERS), so an idle connection costs little more than OpenSSL's
// per-connection state. (Asio's ssl::stream keeps 34 KiB of buffers and a BIO pair per
// connection whatever it does.)
#pragma once

#include <openssl/types.h>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/compose.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/system/error_code.hpp>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <utility>

namespace buzzer::http {

/// The category of TLS protocol errors (a record that does not decrypt, a handshake that
/// fails); the value packs OpenSSL's library and reason, the message is OpenSSL's reason.
const boost::system::error_category& tls_category();

namespace detail {

/// What an operation needs after one call into OpenSSL.
enum class tls_next { done, read, write };

/// One connection's socket, OpenSSL state and deadline, shared with the waits in flight so
/// that none of them outlives what it touches.
struct tls_core : std::enable_shared_from_this<tls_core> {
    tls_core(boost::asio::ip::tcp::socket s, SSL_CTX* ctx);
    ~tls_core();
    tls_core(const tls_core&) = delete;
    tls_core& operator=(const tls_core&) = delete;

    boost::asio::ip::tcp::socket socket;
    SSL* ssl = nullptr;
    boost::asio::steady_timer timer;  ///< the deadline of waits, armed while one is pending
    std::chrono::steady_clock::time_point expiry = std::chrono::steady_clock::time_point::max();
    unsigned timer_generation = 0;  ///< tells a stale timer wait from the current one
    bool timer_armed = false;
    bool timed_out = false;  ///< the deadline closed the socket
    int waits = 0;           ///< operations waiting for the socket now
    int sys_error = 0;       ///< errno of the socket's last failed read or write
    /// A fatal error ended the TLS session: every later operation fails with it.
    boost::system::error_code failure;
    unsigned watch_generation = 0;  ///< tells a cancelled client-end watch from the current
};

/// One call into OpenSSL for each kind of operation: `done` with `n` and `ec` set, or what
/// to wait for before the next call.
tls_next read_step(tls_core& c, boost::asio::mutable_buffer b, std::size_t& n,
                   boost::system::error_code& ec);
tls_next write_step(tls_core& c, boost::asio::const_buffer b, std::size_t& n,
                    boost::system::error_code& ec);
tls_next handshake_step(tls_core& c, boost::system::error_code& ec);
tls_next shutdown_step(tls_core& c, boost::system::error_code& ec);

/// Around every wait for the socket: arms the deadline, and after the wait tells an abort by
/// the deadline (beast::error::timeout) from other errors.
void begin_wait(tls_core& c);
boost::system::error_code end_wait(tls_core& c, boost::system::error_code ec);

/// A composed operation: calls `Step` until it is done, waiting for the socket in between;
/// completes with (ec, n) when `Sized`, else with (ec). Never completes inside the initiating
/// call.
template <class Step, bool Sized>
class tls_op {
  public:
    tls_op(std::shared_ptr<tls_core> core, Step step)
        : core_(std::move(core)), step_(std::move(step)) {}

    template <class Self>
    void operator()(Self& self, boost::system::error_code wait_error = {}) {
        switch (state_) {
            case state::waiting:
                wait_error = end_wait(*core_, wait_error);
                if (wait_error) return finish(self, wait_error, 0);
                break;
            case state::posted:
                return finish(self, error_, size_);
            case state::starting:
                break;
        }
        boost::system::error_code ec;
        std::size_t n = 0;
        const tls_next next = step_(*core_, n, ec);
        if (next == tls_next::done) {
            if (state_ != state::starting) return finish(self, ec, n);
            error_ = ec;
            size_ = n;
            state_ = state::posted;
            boost::asio::post(std::move(self));
            return;
        }
        state_ = state::waiting;
        begin_wait(*core_);
        auto& socket = core_->socket;
        socket.async_wait(next == tls_next::read ? boost::asio::ip::tcp::socket::wait_read
                                                 : boost::asio::ip::tcp::socket::wait_write,
                          std::move(self));
    }

  private:
    enum class state { starting, waiting, posted };

    template <class Self>
    void finish(Self& self, boost::system::error_code ec, std::size_t n) {
        if constexpr (Sized)
            self.complete(ec, n);
        else
            self.complete(ec);
    }

    std::shared_ptr<tls_core> core_;
    Step step_;
    state state_ = state::starting;
    boost::system::error_code error_;
    std::size_t size_ = 0;
};

struct read_some {
    boost::asio::mutable_buffer buffer;
    tls_next operator()(tls_core& c, std::size_t& n, boost::system::error_code& ec) const {
        return read_step(c, buffer, n, ec);
    }
};

struct write_some {
    boost::asio::const_buffer direct;  ///< the caller's buffer, when there is one to write
    std::string gathered;              ///< else the first bytes of several, copied together
    tls_next operator()(tls_core& c, std::size_t& n, boost::system::error_code& ec) const {
        return write_step(c, gathered.empty() ? direct : boost::asio::buffer(gathered), n, ec);
    }
};

struct handshake {
    tls_next operator()(tls_core& c, std::size_t&, boost::system::error_code& ec) const {
        return handshake_step(c, ec);
    }
};

struct shutdown {
    tls_next operator()(tls_core& c, std::size_t&, boost::system::error_code& ec) const {
        return shutdown_step(c, ec);
    }
};

/// The largest TLS record's payload: what one write puts on the wire at most.
inline constexpr std::size_t max_record = 16 * 1024;

template <class Buffers>
boost::asio::mutable_buffer first_buffer(const Buffers& buffers) {
    for (auto it = boost::asio::buffer_sequence_begin(buffers);
         it != boost::asio::buffer_sequence_end(buffers); ++it) {
        boost::asio::mutable_buffer b(*it);
        if (b.size() > 0) return b;
    }
    return {};
}

// The bytes of one write: the first buffer itself when it is all there is or fills a record;
// else up to a record's worth gathered from several (a response's head and body, a chunk's
// size line, data and CRLF), so that they go out as one record rather than one each.
template <class Buffers>
write_some make_write(const Buffers& buffers) {
    write_some w;
    for (auto it = boost::asio::buffer_sequence_begin(buffers);
         it != boost::asio::buffer_sequence_end(buffers); ++it) {
        boost::asio::const_buffer b(*it);
        if (b.size() == 0) continue;
        w.direct = b;
        break;
    }
    const std::size_t total = boost::asio::buffer_size(buffers);
    if (w.direct.size() < total && w.direct.size() < max_record) {
        w.gathered.resize(std::min(total, max_record));
        boost::asio::buffer_copy(boost::asio::buffer(w.gathered), buffers);
    }
    return w;
}

}  // namespace detail

/// A TLS connection accepted by the server: an AsyncReadStream and AsyncWriteStream for
/// Beast's and Asio's algorithms, with deadlines like beast::tcp_stream's. One read and one
/// write may be pending at a time; every operation runs on the socket's executor.
class tls_stream {
  public:
    using executor_type = boost::asio::any_io_executor;

    /// Takes over `socket` for a server-side TLS session of `ctx` (which the session holds a
    /// reference of). Throws std::runtime_error when OpenSSL cannot make one.
    tls_stream(boost::asio::ip::tcp::socket socket, SSL_CTX* ctx);
    tls_stream(tls_stream&&) noexcept = default;
    tls_stream& operator=(tls_stream&&) = delete;
    /// Closes the socket.
    ~tls_stream();

    /// The socket's executor.
    executor_type get_executor() noexcept { return core_->socket.get_executor(); }

    /// The TCP socket underneath: closing or cancelling it ends the pending operations.
    boost::asio::ip::tcp::socket& socket() noexcept { return core_->socket; }

    /// Operations that wait for the socket from now on fail with beast::error::timeout (and
    /// the socket is closed) once `after` has passed.
    void expires_after(std::chrono::steady_clock::duration after);
    /// No deadline for waits that start from now on.
    void expires_never();

    /// Closes the socket; pending operations end with operation_aborted.
    void close();

    /// Reads decrypted bytes into `buffers`: what OpenSSL holds already, else what arrives.
    /// Completes with (ec, n); the end of the session (close_notify, or the end of the TCP
    /// stream) is asio::error::eof.
    template <class MutableBuffers, class Token>
    auto async_read_some(const MutableBuffers& buffers, Token&& token) {
        return boost::asio::async_compose<Token, void(boost::system::error_code, std::size_t)>(
            detail::tls_op<detail::read_some, true>(
                core_, detail::read_some{detail::first_buffer(buffers)}),
            token, core_->socket);
    }

    /// Writes one record of at most 16 KiB from `buffers`. Completes with (ec, n).
    template <class ConstBuffers, class Token>
    auto async_write_some(const ConstBuffers& buffers, Token&& token) {
        return boost::asio::async_compose<Token, void(boost::system::error_code, std::size_t)>(
            detail::tls_op<detail::write_some, true>(core_, detail::make_write(buffers)), token,
            core_->socket);
    }

    /// The server side of the handshake. Completes with (ec).
    template <class Token>
    auto async_handshake(Token&& token) {
        return boost::asio::async_compose<Token, void(boost::system::error_code)>(
            detail::tls_op<detail::handshake, false>(core_, {}), token, core_->socket);
    }

    /// Sends close_notify (without waiting for the client's); best effort, bounded by the
    /// deadline. Completes with (ec).
    template <class Token>
    auto async_shutdown(Token&& token) {
        return boost::asio::async_compose<Token, void(boost::system::error_code)>(
            detail::tls_op<detail::shutdown, false>(core_, {}), token, core_->socket);
    }

    /// Calls `fn` once, on the socket's executor, when the client has ended its side: the end
    /// of the TCP stream or an error, a close_notify, or with `any_byte` any record at all
    /// (a client that was not to send more). Without `any_byte`, a record of data (a request
    /// sent ahead) is left for the next read and ends the watch. At most one watch at a time.
    void watch_client_end(bool any_byte, std::function<void()> fn);
    /// Ends the watch: `fn` is not called after this.
    void cancel_watch();

    /// The protocol and cipher of an established session ("TLSv1.3 TLS_AES_128_GCM_SHA256").
    std::string session_description() const;

  private:
    std::shared_ptr<detail::tls_core> core_;
};

}  // namespace buzzer::http
