#include "http/tls_context.hpp"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string_view>

namespace buzzer::http {

namespace {

// A PEM file of keys and certificates is a few KiB; this bounds what a wrong path (a log, a
// device) makes the server read.
constexpr std::size_t max_pem_file = 1 << 20;

// TLS 1.2 suites: ECDHE key exchange (forward secrecy) with an AEAD cipher only. TLS 1.3
// suites are all of that kind; OpenSSL's defaults for them stay.
constexpr const char* tls12_ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

// Sessions kept for resumption by clients without tickets; each costs about a KiB.
constexpr long session_cache_size = 4096;

[[noreturn]] void fail(const std::string& file, const std::string& what) {
    throw std::runtime_error(file + ": " + what);
}

// The reason of the oldest error OpenSSL queued on this thread ("no start line"), and the
// queue emptied.
std::string openssl_reason() {
    const unsigned long first = ERR_get_error();
    ERR_clear_error();
    if (first == 0) return "unknown OpenSSL error";
    const char* reason = ERR_reason_error_string(first);
    if (reason) return reason;
    char text[256];
    ERR_error_string_n(first, text, sizeof text);
    return text;
}

// The whole content of `file`, at most max_pem_file bytes.
std::string read_file(const std::string& file) {
    std::FILE* f = std::fopen(file.c_str(), "rb");
    if (!f) fail(file, std::string("cannot read the file: ") + std::strerror(errno));
    std::string content;
    char chunk[4096];
    std::size_t n = 0;
    while ((n = std::fread(chunk, 1, sizeof chunk, f)) > 0) {
        content.append(chunk, n);
        if (content.size() > max_pem_file) {
            std::fclose(f);
            fail(file, "larger than " + std::to_string(max_pem_file) + " bytes: not a PEM file");
        }
    }
    const bool failed = std::ferror(f) != 0;
    const int error = errno;
    std::fclose(f);
    if (failed) fail(file, std::string("cannot read the file: ") + std::strerror(error));
    return content;
}

struct bio_deleter {
    void operator()(BIO* b) const { BIO_free(b); }
};
using bio_ptr = std::unique_ptr<BIO, bio_deleter>;

bio_ptr memory_bio(const std::string& content) {
    bio_ptr b(BIO_new_mem_buf(content.data(), static_cast<int>(content.size())));
    if (!b) throw std::runtime_error("TLS: out of memory");
    return b;
}

// Refuses to ask for a passphrase: OpenSSL's default prompts on the terminal. An encrypted key
// then fails to load, with a reason that says so.
int no_passphrase(char*, int, int, void*) { return 0; }

// Whether the error queued last is PEM's "no start line": the end of a PEM file's objects.
bool at_end_of_pem() {
    const unsigned long e = ERR_peek_last_error();
    return ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE;
}

void load_chain(SSL_CTX* ctx, const std::string& file) {
    const std::string content = read_file(file);
    auto bio = memory_bio(content);
    X509* leaf = PEM_read_bio_X509_AUX(bio.get(), nullptr, no_passphrase, nullptr);
    if (!leaf) fail(file, "no PEM certificate in the file (" + openssl_reason() + ")");
    const int used = SSL_CTX_use_certificate(ctx, leaf);
    X509_free(leaf);  // the context holds a reference of its own
    if (used != 1) fail(file, "the certificate cannot be used: " + openssl_reason());
    // The chain after the leaf, up to the end of the file.
    for (;;) {
        X509* ca = PEM_read_bio_X509(bio.get(), nullptr, no_passphrase, nullptr);
        if (!ca) {
            if (at_end_of_pem()) {
                ERR_clear_error();
                break;
            }
            fail(file, "a certificate of the chain does not load: " + openssl_reason());
        }
        if (SSL_CTX_add0_chain_cert(ctx, ca) != 1) {
            X509_free(ca);
            fail(file, "a certificate of the chain cannot be used: " + openssl_reason());
        }
    }
}

void load_key(SSL_CTX* ctx, const std::string& file, const std::string& cert_file) {
    const std::string content = read_file(file);
    auto bio = memory_bio(content);
    EVP_PKEY* key = PEM_read_bio_PrivateKey(bio.get(), nullptr, no_passphrase, nullptr);
    if (!key) fail(file, "no unencrypted PEM private key in the file (" + openssl_reason() + ")");
    const int used = SSL_CTX_use_PrivateKey(ctx, key);
    EVP_PKEY_free(key);
    if (used != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        ERR_clear_error();
        fail(file, "the key does not match the certificate of " + cert_file);
    }
}

// ALPN: this server speaks HTTP/1.1 only. A client that offers it gets it; one that offers
// other protocols alone goes on without ALPN and is answered in HTTP/1.1 all the same.
int select_alpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                unsigned int inlen, void*) {
    static constexpr unsigned char http11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
    unsigned char* selected = nullptr;
    if (SSL_select_next_proto(&selected, outlen, http11, sizeof http11, in, inlen) ==
        OPENSSL_NPN_NEGOTIATED) {
        *out = selected;
        return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

}  // namespace

tls_context make_tls_context(const std::string& cert_file, const std::string& key_file) {
    ERR_clear_error();
    tls_context ctx(SSL_CTX_new(TLS_server_method()), SSL_CTX_free);
    if (!ctx) throw std::runtime_error("TLS: cannot make a context: " + openssl_reason());
    SSL_CTX* c = ctx.get();
    if (SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_max_proto_version(c, TLS1_3_VERSION) != 1 ||
        SSL_CTX_set_cipher_list(c, tls12_ciphers) != 1)
        throw std::runtime_error("TLS: cannot set the protocols and ciphers: " + openssl_reason());
    // No renegotiation (a client could make the server work for nothing, or mix identities
    // within a connection); no compression (CRIME). An end of the connection without
    // close_notify is an end like any other: HTTP frames its messages itself.
    SSL_CTX_set_options(
        c, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_IGNORE_UNEXPECTED_EOF);
    // The per-connection buffers go back to the allocator whenever they are empty (an idle
    // stream holds none); a write may finish with one record of several (the stream loops).
    SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                            SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    // Resumption: stateless tickets (keys made with the context: a reload starts them anew)
    // and, for clients without tickets, a bounded cache of sessions.
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_SERVER);
    SSL_CTX_sess_set_cache_size(c, session_cache_size);
    static constexpr unsigned char session_context[] = "buzzer";
    SSL_CTX_set_session_id_context(c, session_context, sizeof session_context - 1);
    SSL_CTX_set_alpn_select_cb(c, select_alpn, nullptr);

    load_chain(c, cert_file);
    load_key(c, key_file, cert_file);
    ERR_clear_error();
    return ctx;
}

std::string tls_library_version() { return OpenSSL_version(OPENSSL_VERSION_STRING); }

}  // namespace buzzer::http
