// A blocking TLS client over OpenSSL for tests, and certificates made with the openssl CLI.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "support/process.hpp"

namespace buzzer::test {

// A key and a certificate as PEM files.
struct certificate_files {
    std::filesystem::path cert;
    std::filesystem::path key;
};

namespace detail {

inline void openssl_cli(std::vector<std::string> args) {
    auto r = run_process("/usr/bin/openssl", std::move(args), std::chrono::seconds(30));
    if (r.exit_code != 0)
        throw std::runtime_error("openssl failed (" + std::to_string(r.exit_code) + "): " + r.err);
}

}  // namespace detail

// Makes `name`.pem and `name`.key in `dir`: a self-signed P-256 certificate for 127.0.0.1
// and localhost with subject CN=`cn` and serial `serial`.
inline certificate_files make_self_signed(const temp_dir& dir, const std::string& name,
                                          const std::string& cn, unsigned serial) {
    certificate_files f{dir / (name + ".pem"), dir / (name + ".key")};
    detail::openssl_cli({"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                         "-nodes", "-keyout", f.key.string(), "-out", f.cert.string(), "-days", "2",
                         "-subj", "/CN=" + cn, "-set_serial", std::to_string(serial), "-addext",
                         "subjectAltName=IP:127.0.0.1,DNS:localhost"});
    return f;
}

// Makes, in `dir`, a root CA (`name`-root.pem), an intermediate CA it signs and a leaf for
// 127.0.0.1 that the intermediate signs; returns the leaf's key and a certificate file with
// the leaf then the intermediate (what a server is given). The root is `name`-root.pem.
inline certificate_files make_chain(const temp_dir& dir, const std::string& name) {
    auto p = [&](const std::string& suffix) { return (dir / (name + suffix)).string(); };
    detail::openssl_cli({"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                         "-nodes", "-keyout", p("-root.key"), "-out", p("-root.pem"), "-days", "2",
                         "-subj", "/CN=" + name + " root"});
    auto ca_ext = dir.write_file(name + "-ca.ext",
                                 "basicConstraints=critical,CA:TRUE\n"
                                 "keyUsage=critical,keyCertSign,cRLSign\n");
    auto leaf_ext = dir.write_file(name + "-leaf.ext",
                                   "basicConstraints=CA:FALSE\n"
                                   "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
    detail::openssl_cli({"req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                         "-nodes", "-keyout", p("-mid.key"), "-out", p("-mid.csr"), "-subj",
                         "/CN=" + name + " intermediate"});
    detail::openssl_cli({"x509", "-req", "-in", p("-mid.csr"), "-CA", p("-root.pem"), "-CAkey",
                         p("-root.key"), "-set_serial", "2", "-days", "2", "-extfile",
                         ca_ext.string(), "-out", p("-mid.pem")});
    detail::openssl_cli({"req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                         "-nodes", "-keyout", p("-leaf.key"), "-out", p("-leaf.csr"), "-subj",
                         "/CN=" + name + " leaf"});
    detail::openssl_cli({"x509", "-req", "-in", p("-leaf.csr"), "-CA", p("-mid.pem"), "-CAkey",
                         p("-mid.key"), "-set_serial", "3", "-days", "2", "-extfile",
                         leaf_ext.string(), "-out", p("-leaf.pem")});
    auto read = [](const std::string& path) {
        std::string out;
        std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"),
                                                          std::fclose);
        if (!f) throw std::runtime_error("cannot read " + path);
        char buf[4096];
        for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, f.get())) > 0;) out.append(buf, n);
        return out;
    };
    auto chain = dir.write_file(name + "-chain.pem", read(p("-leaf.pem")) + read(p("-mid.pem")));
    return {chain, p("-leaf.key")};
}

// How a tls_client connects.
struct tls_client_options {
    // Trusted certificates (PEM); empty: the server's certificate is not verified.
    std::string ca_file = {};
    // The protocol versions offered (TLS1_2_VERSION ...); 0: OpenSSL's default.
    int min_version = 0;
    int max_version = 0;
    // The TLS 1.2 (and older) cipher list; empty: OpenSSL's default.
    std::string ciphers = {};
    // OpenSSL's security level; -1: the default (0 lets a client offer TLS 1.1).
    int security_level = -1;
    // How long connect, the handshake and each send may take.
    std::chrono::milliseconds timeout = std::chrono::seconds(10);
};

// A TLS connection to 127.0.0.1:port with its own blocking calls and deadlines.
class tls_client {
  public:
    // Connects without a handshake; call handshake() next.
    explicit tls_client(unsigned short port, tls_client_options options = {})
        : options_(std::move(options)) {
        ctx_.reset(SSL_CTX_new(TLS_client_method()));
        if (!ctx_) throw std::runtime_error("SSL_CTX_new failed");
        if (options_.security_level >= 0)
            SSL_CTX_set_security_level(ctx_.get(), options_.security_level);
        if (options_.min_version) SSL_CTX_set_min_proto_version(ctx_.get(), options_.min_version);
        if (options_.max_version) SSL_CTX_set_max_proto_version(ctx_.get(), options_.max_version);
        if (!options_.ciphers.empty() &&
            SSL_CTX_set_cipher_list(ctx_.get(), options_.ciphers.c_str()) != 1)
            throw std::runtime_error("bad cipher list " + options_.ciphers);
        if (!options_.ca_file.empty()) {
            if (SSL_CTX_load_verify_locations(ctx_.get(), options_.ca_file.c_str(), nullptr) != 1)
                throw std::runtime_error("cannot load " + options_.ca_file);
            SSL_CTX_set_verify(ctx_.get(), SSL_VERIFY_PEER, nullptr);
        }
        fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd_ < 0) throw std::runtime_error("socket failed");
        sockaddr_in at{};
        at.sin_family = AF_INET;
        at.sin_port = htons(port);
        at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (::connect(fd_, reinterpret_cast<sockaddr*>(&at), sizeof at) != 0 &&
            errno != EINPROGRESS)
            throw std::runtime_error("connect failed");
        if (!wait_for(POLLOUT, deadline())) throw std::runtime_error("connect timed out");
        int one = 1;
        ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        ssl_.reset(SSL_new(ctx_.get()));
        SSL_set_fd(ssl_.get(), fd_);
        SSL_set_tlsext_host_name(ssl_.get(), "localhost");
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_.get()), "127.0.0.1");
        SSL_set_connect_state(ssl_.get());
    }

    ~tls_client() { close(); }
    tls_client(const tls_client&) = delete;
    tls_client& operator=(const tls_client&) = delete;

    // Runs the handshake; returns "" once established, else why it failed.
    std::string handshake() {
        const auto until = deadline();
        for (;;) {
            ERR_clear_error();
            int r = SSL_do_handshake(ssl_.get());
            if (r == 1) return {};
            int e = SSL_get_error(ssl_.get(), r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
                if (!wait_for(e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, until))
                    return "handshake timed out";
                continue;
            }
            return describe(e);
        }
    }

    // Sends all of `bytes`; throws std::runtime_error on failure.
    void send(std::string_view bytes) {
        const auto until = deadline();
        while (!bytes.empty()) {
            ERR_clear_error();
            std::size_t n = 0;
            int r = SSL_write_ex(ssl_.get(), bytes.data(), bytes.size(), &n);
            if (r == 1) {
                bytes.remove_prefix(n);
                continue;
            }
            int e = SSL_get_error(ssl_.get(), r);
            if ((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) &&
                wait_for(e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, until))
                continue;
            throw std::runtime_error("send failed: " + describe(e));
        }
    }

    // What arrives within `timeout` (at least one read's worth if any); "" when nothing did
    // or the server ended the session (see closed()).
    std::string receive(std::chrono::milliseconds timeout) {
        const auto until = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            ERR_clear_error();
            char buf[16384];
            std::size_t n = 0;
            int r = SSL_read_ex(ssl_.get(), buf, sizeof buf, &n);
            if (r == 1) return std::string(buf, n);
            int e = SSL_get_error(ssl_.get(), r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
                if (!wait_for(e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, until)) return {};
                continue;
            }
            closed_ = true;
            return {};
        }
    }

    // Everything received until `done(received)` holds, the server closes, or `timeout`.
    template <class Done>
    std::string receive_until(Done done, std::chrono::milliseconds timeout) {
        const auto until = std::chrono::steady_clock::now() + timeout;
        std::string got;
        while (!done(got) && !closed_) {
            const auto left = std::chrono::ceil<std::chrono::milliseconds>(
                until - std::chrono::steady_clock::now());
            if (left.count() <= 0) break;
            got += receive(left);
        }
        return got;
    }

    // Everything received until the server closes or `timeout` passes.
    std::string receive_until_close(std::chrono::milliseconds timeout) {
        return receive_until([](const std::string&) { return false; }, timeout);
    }

    // Whether the server has ended the session or the connection.
    bool closed() const { return closed_; }

    // Whether the server's close_notify has arrived.
    bool received_close_notify() const {
        return ssl_ && (SSL_get_shutdown(ssl_.get()) & SSL_RECEIVED_SHUTDOWN) != 0;
    }

    // Sends close_notify (without waiting for the server's).
    void shutdown() { SSL_shutdown(ssl_.get()); }

    // The negotiated protocol ("TLSv1.3").
    std::string protocol() const { return SSL_get_version(ssl_.get()); }

    // The server certificate's serial number in decimal, or "" without one.
    std::string peer_serial() const {
        std::unique_ptr<X509, void (*)(X509*)> cert(SSL_get1_peer_certificate(ssl_.get()),
                                                    X509_free);
        if (!cert) return {};
        BIGNUM* bn = ASN1_INTEGER_to_BN(X509_get_serialNumber(cert.get()), nullptr);
        char* text = BN_bn2dec(bn);
        std::string out(text);
        OPENSSL_free(text);
        BN_free(bn);
        return out;
    }

    // The number of certificates the server sent (its leaf and chain).
    int peer_chain_length() const {
        STACK_OF(X509)* chain = SSL_get_peer_cert_chain(ssl_.get());
        return chain ? sk_X509_num(chain) : 0;
    }

    // Whether the session was resumed.
    bool resumed() const { return SSL_session_reused(ssl_.get()) == 1; }

    // The session, for resuming it on another connection (call after some data was read: a
    // TLS 1.3 ticket arrives after the handshake).
    SSL_SESSION* session() const { return SSL_get1_session(ssl_.get()); }
    // Offers `s` (from session()) for resumption; call before handshake().
    void resume(SSL_SESSION* s) {
        SSL_set_session(ssl_.get(), s);
        SSL_SESSION_free(s);
    }

    // The socket, for raw writes below TLS.
    int fd() const { return fd_; }

    // Closes the socket at once (no close_notify).
    void close() {
        ssl_.reset();
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }

  private:
    std::chrono::steady_clock::time_point deadline() const {
        return std::chrono::steady_clock::now() + options_.timeout;
    }

    bool wait_for(short events, std::chrono::steady_clock::time_point until) {
        for (;;) {
            const auto left = std::chrono::ceil<std::chrono::milliseconds>(
                until - std::chrono::steady_clock::now());
            if (left.count() <= 0) return false;
            pollfd p{fd_, events, 0};
            int r = ::poll(&p, 1, static_cast<int>(left.count()));
            if (r > 0) return true;
            if (r < 0 && errno != EINTR) return false;
        }
    }

    static std::string describe(int ssl_error) {
        unsigned long e = ERR_get_error();
        ERR_clear_error();
        if (e) {
            char text[256];
            ERR_error_string_n(e, text, sizeof text);
            return text;
        }
        if (ssl_error == SSL_ERROR_ZERO_RETURN) return "closed by the server";
        if (ssl_error == SSL_ERROR_SYSCALL) return "connection closed or reset";
        return "TLS error " + std::to_string(ssl_error);
    }

    struct ctx_free {
        void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
    };
    struct ssl_free {
        void operator()(SSL* s) const { SSL_free(s); }
    };

    tls_client_options options_;
    std::unique_ptr<SSL_CTX, ctx_free> ctx_;
    std::unique_ptr<SSL, ssl_free> ssl_;
    int fd_ = -1;
    bool closed_ = false;
};

}  // namespace buzzer::test
