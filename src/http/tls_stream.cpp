#include "http/tls_stream.hpp"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <boost/asio/error.hpp>
#include <boost/beast/core/error.hpp>
#include <cerrno>
#include <stdexcept>

namespace buzzer::http {
namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using boost::system::error_code;

namespace {

class tls_error_category final : public boost::system::error_category {
  public:
    const char* name() const noexcept override { return "buzzer.tls"; }
    std::string message(int value) const override {
        const char* reason = ERR_reason_error_string(static_cast<unsigned long>(value));
        return reason ? std::string("TLS: ") + reason : "TLS protocol error";
    }
};

// The socket as OpenSSL's transport: plain non-blocking send and recv on the descriptor the
// socket has now, so that once the socket is closed (by a deadline, a stop) OpenSSL gets
// EBADF and never touches a descriptor number that was reused meanwhile.
detail::tls_core* core_of(BIO* b) { return static_cast<detail::tls_core*>(BIO_get_data(b)); }

int bio_write(BIO* b, const char* data, int size) {
    BIO_clear_retry_flags(b);
    auto* core = core_of(b);
    const auto n = ::send(core->socket.native_handle(), data, static_cast<std::size_t>(size),
                          MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) return static_cast<int>(n);
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        BIO_set_retry_write(b);
    else
        core->sys_error = errno;
    return -1;
}

int bio_read(BIO* b, char* out, int size) {
    BIO_clear_retry_flags(b);
    auto* core = core_of(b);
    const auto n =
        ::recv(core->socket.native_handle(), out, static_cast<std::size_t>(size), MSG_DONTWAIT);
    if (n >= 0) return static_cast<int>(n);  // 0: the end of the TCP stream
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        BIO_set_retry_read(b);
    else
        core->sys_error = errno;
    return -1;
}

long bio_ctrl(BIO*, int cmd, long, void*) { return cmd == BIO_CTRL_FLUSH ? 1 : 0; }

int bio_create(BIO* b) {
    BIO_set_init(b, 1);
    return 1;
}

BIO_METHOD* socket_bio_method() {
    // Made once and kept for the life of the process.
    static BIO_METHOD* method = [] {
        BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "buzzer socket");
        if (!m || BIO_meth_set_write(m, bio_write) != 1 || BIO_meth_set_read(m, bio_read) != 1 ||
            BIO_meth_set_ctrl(m, bio_ctrl) != 1 || BIO_meth_set_create(m, bio_create) != 1)
            throw std::runtime_error("TLS: cannot make the socket BIO");
        return m;
    }();
    return method;
}

std::string openssl_reason() {
    const unsigned long e = ERR_get_error();
    ERR_clear_error();
    const char* reason = e ? ERR_reason_error_string(e) : nullptr;
    return reason ? reason : "unknown OpenSSL error";
}

// What a call into OpenSSL that returned `result` wants: a wait, or nothing more (with `ec`
// set). A fatal error is kept: the session is over.
detail::tls_next after_call(detail::tls_core& c, int result, error_code& ec) {
    const int error = SSL_get_error(c.ssl, result);
    switch (error) {
        case SSL_ERROR_WANT_READ:
            return detail::tls_next::read;
        case SSL_ERROR_WANT_WRITE:
            return detail::tls_next::write;
        case SSL_ERROR_ZERO_RETURN:
            // close_notify, or the end of the TCP stream without it
            // (SSL_OP_IGNORE_UNEXPECTED_EOF): either way the client's side has ended.
            ec = asio::error::eof;
            ERR_clear_error();
            return detail::tls_next::done;
        case SSL_ERROR_SYSCALL:
            ec = c.timed_out        ? error_code(boost::beast::error::timeout)
                 : c.sys_error != 0 ? error_code(c.sys_error, boost::system::system_category())
                                    : error_code(asio::error::eof);
            break;
        default: {
            const unsigned long e = ERR_peek_error();
            ec = error_code(static_cast<int>(ERR_PACK(ERR_GET_LIB(e), 0, ERR_GET_REASON(e))),
                            tls_category());
            break;
        }
    }
    ERR_clear_error();
    c.failure = ec;
    return detail::tls_next::done;
}

// Whether the session can take no more calls; sets `ec` to why.
bool unusable(const detail::tls_core& c, error_code& ec) {
    if (c.failure) {
        ec = c.failure;
        return true;
    }
    if (!c.socket.is_open()) {
        ec = c.timed_out ? error_code(boost::beast::error::timeout)
                         : error_code(asio::error::bad_descriptor);
        return true;
    }
    return false;
}

void on_deadline(const std::shared_ptr<detail::tls_core>& c, unsigned generation, error_code ec);

// The timer's handler holds the core: a deadline never touches a freed stream.
void arm_timer(std::shared_ptr<detail::tls_core> c) {
    c->timer.expires_at(c->expiry);  // cancels a wait for a later expiry: now a stale one
    const unsigned generation = ++c->timer_generation;
    c->timer_armed = true;
    auto& timer = c->timer;
    timer.async_wait(
        [c = std::move(c), generation](error_code ec) { on_deadline(c, generation, ec); });
}

void on_deadline(const std::shared_ptr<detail::tls_core>& c, unsigned generation, error_code ec) {
    if (generation != c->timer_generation) return;
    c->timer_armed = false;
    if (ec) return;  // cancelled: the stream closed
    // Nothing is waiting any more: the next wait arms the timer again.
    if (c->waits == 0 || c->expiry == std::chrono::steady_clock::time_point::max()) return;
    if (std::chrono::steady_clock::now() < c->expiry) {
        arm_timer(c);  // the deadline moved later meanwhile
        return;
    }
    c->timed_out = true;
    error_code ignored;
    c->socket.close(ignored);
}

// The wait of a watch for the end of the client's side (see tls_stream::watch_client_end).
void watch_end(std::shared_ptr<detail::tls_core> c, unsigned generation, bool any_byte,
               std::function<void()> fn);

// What the records that made the socket readable are, during a watch without `any_byte`.
enum class arrival { data, more, end };

arrival peek_arrival(detail::tls_core& c) {
    error_code ec;
    if (unusable(c, ec)) return arrival::end;
    ERR_clear_error();
    char byte;
    std::size_t n = 0;
    // Decrypts a record without taking its bytes: a request sent ahead stays for the read.
    const int result = SSL_peek_ex(c.ssl, &byte, 1, &n);
    if (result == 1) return arrival::data;
    switch (after_call(c, result, ec)) {
        case detail::tls_next::read:
            return arrival::more;  // part of a record, or a handshake message
        case detail::tls_next::write:
            return arrival::data;  // the session has something to send: the read sees to it
        case detail::tls_next::done:
            break;
    }
    return arrival::end;
}

void watch_end(std::shared_ptr<detail::tls_core> c, unsigned generation, bool any_byte,
               std::function<void()> fn) {
    auto& socket = c->socket;
    socket.async_wait(tcp::socket::wait_read, [c = std::move(c), generation, any_byte,
                                               fn = std::move(fn)](error_code ec) mutable {
        if (ec == asio::error::operation_aborted || generation != c->watch_generation) return;
        if (!ec && !any_byte) {
            switch (peek_arrival(*c)) {
                case arrival::data:
                    return;
                case arrival::more:
                    watch_end(std::move(c), generation, any_byte, std::move(fn));
                    return;
                case arrival::end:
                    break;
            }
        }
        fn();
    });
}

}  // namespace

const boost::system::error_category& tls_category() {
    static const tls_error_category category;
    return category;
}

namespace detail {

tls_core::tls_core(tcp::socket s, SSL_CTX* ctx)
    : socket(std::move(s)), timer(socket.get_executor()) {
    ERR_clear_error();
    ssl = SSL_new(ctx);
    if (!ssl) throw std::runtime_error("TLS: cannot start a session: " + openssl_reason());
    BIO* bio = BIO_new(socket_bio_method());
    if (!bio) {
        SSL_free(ssl);
        throw std::runtime_error("TLS: cannot start a session: " + openssl_reason());
    }
    BIO_set_data(bio, this);
    SSL_set_bio(ssl, bio, bio);  // the session owns it now
    SSL_set_accept_state(ssl);
}

tls_core::~tls_core() {
    // A session that ended without close_notify (an idle connection closed, a client gone)
    // but without an error either stays resumable: OpenSSL would drop it from the cache.
    if (!failure && SSL_is_init_finished(ssl))
        SSL_set_shutdown(ssl, SSL_get_shutdown(ssl) | SSL_SENT_SHUTDOWN);
    SSL_free(ssl);
}

tls_next read_step(tls_core& c, asio::mutable_buffer b, std::size_t& n, error_code& ec) {
    if (b.size() == 0 || unusable(c, ec)) return tls_next::done;
    ERR_clear_error();
    const int result = SSL_read_ex(c.ssl, b.data(), b.size(), &n);
    if (result == 1) return tls_next::done;
    return after_call(c, result, ec);
}

tls_next write_step(tls_core& c, asio::const_buffer b, std::size_t& n, error_code& ec) {
    if (b.size() == 0 || unusable(c, ec)) return tls_next::done;
    ERR_clear_error();
    const int result = SSL_write_ex(c.ssl, b.data(), b.size(), &n);
    if (result == 1) return tls_next::done;
    return after_call(c, result, ec);
}

tls_next handshake_step(tls_core& c, error_code& ec) {
    if (unusable(c, ec)) return tls_next::done;
    ERR_clear_error();
    const int result = SSL_do_handshake(c.ssl);
    if (result == 1) return tls_next::done;
    return after_call(c, result, ec);
}

tls_next shutdown_step(tls_core& c, error_code& ec) {
    // After a fatal error OpenSSL must not be asked to shut down; before the handshake there
    // is no session to close.
    if (unusable(c, ec) || !SSL_is_init_finished(c.ssl)) return tls_next::done;
    ERR_clear_error();
    const int result = SSL_shutdown(c.ssl);
    // 0 or 1: close_notify is on its way; the client's is not waited for.
    if (result >= 0) return tls_next::done;
    const tls_next next = after_call(c, result, ec);
    return next == tls_next::write ? next : tls_next::done;
}

void begin_wait(tls_core& c) {
    ++c.waits;
    if (c.expiry == std::chrono::steady_clock::time_point::max()) return;
    if (c.timer_armed && c.timer.expiry() <= c.expiry) return;
    arm_timer(c.shared_from_this());
}

error_code end_wait(tls_core& c, error_code ec) {
    --c.waits;
    if (ec && c.timed_out) return boost::beast::error::timeout;
    return ec;
}

}  // namespace detail

tls_stream::tls_stream(tcp::socket socket, SSL_CTX* ctx)
    : core_(std::make_shared<detail::tls_core>(std::move(socket), ctx)) {}

tls_stream::~tls_stream() {
    if (core_) close();
}

void tls_stream::expires_after(std::chrono::steady_clock::duration after) {
    core_->expiry = std::chrono::steady_clock::now() + after;
}

void tls_stream::expires_never() { core_->expiry = std::chrono::steady_clock::time_point::max(); }

void tls_stream::close() {
    error_code ignored;
    core_->socket.close(ignored);
    core_->timer.cancel();
}

void tls_stream::watch_client_end(bool any_byte, std::function<void()> fn) {
    watch_end(core_, core_->watch_generation, any_byte, std::move(fn));
}

void tls_stream::cancel_watch() {
    ++core_->watch_generation;
    error_code ignored;
    core_->socket.cancel(ignored);
}

std::string tls_stream::session_description() const {
    return std::string(SSL_get_version(core_->ssl)) + " " + SSL_get_cipher_name(core_->ssl);
}

}  // namespace buzzer::http
