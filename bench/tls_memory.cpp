// buzzer-tls-memory: what OpenSSL keeps per server-side TLS session once it is idle.
//
// Makes the server's TLS context the way `buzzer --tls-cert/--tls-key` does, then holds
// --sessions sessions open, each after a handshake with an in-process client (over a BIO
// pair), one request read and one response written: the state of an idle event stream. Every
// allocation OpenSSL makes goes through hooks that record its size and the source line that
// made it (CRYPTO_set_mem_functions), so the bytes a session holds are counted exactly, by
// line, without the allocator's rounding and without the sockets. Client-side allocations are
// left out.
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "http/tls_context.hpp"

namespace {

struct allocation {
    std::size_t size;
    const char* file;
    int line;
    bool server;
};

// Live allocations of OpenSSL; operator new (which the map uses) does not come back here.
std::unordered_map<void*, allocation>* live = nullptr;
bool on_server = false;  // set while the server's side calls into OpenSSL

void note(void* p, std::size_t n, const char* file, int line) {
    if (p && live) (*live)[p] = {n, file, line, on_server};
}

void forget(void* p) {
    if (p && live) live->erase(p);
}

void* hook_malloc(std::size_t n, const char* file, int line) {
    void* p = std::malloc(n);
    note(p, n, file, line);
    return p;
}

void* hook_realloc(void* p, std::size_t n, const char* file, int line) {
    forget(p);
    void* q = std::realloc(p, n);
    note(q, n, file, line);
    return q;
}

void hook_free(void* p, const char*, int) {
    forget(p);
    std::free(p);
}

// Runs `fn` with the server's allocations marked as such; returns what it returns.
template <class Fn>
auto as_server(Fn fn) {
    struct marking {
        marking() { on_server = true; }
        ~marking() { on_server = false; }
    } mark;
    return fn();
}

[[noreturn]] void die(const char* what) {
    std::fprintf(stderr, "buzzer-tls-memory: %s\n", what);
    ERR_print_errors_fp(stderr);
    std::exit(1);
}

struct session {
    SSL* server;
    SSL* client;
};

// A session in the state of an idle event stream: handshake done (tickets sent), the
// client's request read, the response head and a first comment written and read.
session open_session(SSL_CTX* server_ctx, SSL_CTX* client_ctx) {
    session s{as_server([&] { return SSL_new(server_ctx); }), SSL_new(client_ctx)};
    if (!s.server || !s.client) die("cannot make a session");
    BIO* server_end = nullptr;
    BIO* client_end = nullptr;
    if (BIO_new_bio_pair(&server_end, 0, &client_end, 0) != 1) die("cannot make a BIO pair");
    as_server([&] {
        SSL_set_bio(s.server, server_end, server_end);
        SSL_set_accept_state(s.server);
    });
    SSL_set_bio(s.client, client_end, client_end);
    SSL_set_connect_state(s.client);
    bool done = false;
    for (int round = 0; round < 20 && !done; ++round) {
        const int server_result = as_server([&] { return SSL_do_handshake(s.server); });
        const int client_result = SSL_do_handshake(s.client);
        done = server_result == 1 && client_result == 1;
    }
    if (!done) die("the handshake does not finish");

    static constexpr char request[] =
        "GET /events?operation=01J0000000000000000000000 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Accept: text/event-stream\r\n\r\n";
    static constexpr char response[] =
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n"
        "Transfer-Encoding: chunked\r\n\r\n9\r\nretry: 1000\n\n\r\n";
    char buffer[4096];
    if (SSL_write(s.client, request, sizeof request - 1) <= 0) die("the request is not written");
    // The server's read also takes the client's part of the handshake that is still queued.
    const int read = as_server([&] { return SSL_read(s.server, buffer, sizeof buffer); });
    if (read != static_cast<int>(sizeof request - 1)) die("the request is not read whole");
    const int written =
        as_server([&] { return SSL_write(s.server, response, sizeof response - 1); });
    if (written <= 0) die("the response is not written");
    if (SSL_read(s.client, buffer, sizeof buffer) <= 0) die("the response is not read");
    return s;
}

struct tally {
    std::size_t bytes = 0;
    std::size_t count = 0;
};

std::map<std::string, tally> server_allocations() {
    std::map<std::string, tally> by_line;
    for (const auto& [p, a] : *live) {
        if (!a.server) continue;
        auto& t = by_line[std::string(a.file ? a.file : "?") + ":" + std::to_string(a.line)];
        t.bytes += a.size;
        ++t.count;
    }
    return by_line;
}

// What grew from `before` to `after`, per session, by source line; largest first.
struct row {
    double bytes;
    double count;
    std::string where;
};

std::vector<row> growth(const std::map<std::string, tally>& before,
                        const std::map<std::string, tally>& after, int sessions) {
    std::vector<row> rows;
    for (const auto& [where, t] : after) {
        const auto it = before.find(where);
        const tally base = it == before.end() ? tally{} : it->second;
        const double bytes =
            (static_cast<double>(t.bytes) - static_cast<double>(base.bytes)) / sessions;
        const double count =
            (static_cast<double>(t.count) - static_cast<double>(base.count)) / sessions;
        if (bytes != 0) rows.push_back({bytes, count, where});
    }
    std::sort(rows.begin(), rows.end(),
              [](const row& a, const row& b) { return a.bytes > b.bytes; });
    return rows;
}

void usage() {
    std::fputs(
        "usage: buzzer-tls-memory --cert FILE --key FILE [--sessions N] [--tls 1.2|1.3]\n"
        "Counts the bytes OpenSSL holds per idle server-side TLS session, by source line.\n",
        stderr);
    std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
    // Before anything else in OpenSSL allocates.
    if (CRYPTO_set_mem_functions(hook_malloc, hook_realloc, hook_free) != 1)
        die("OpenSSL's allocator cannot be replaced");
    live = new std::unordered_map<void*, allocation>;

    std::string cert, key, version = "1.3";
    int sessions = 1000;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (i + 1 >= argc) usage();
        const char* value = argv[++i];
        if (arg == "--cert")
            cert = value;
        else if (arg == "--key")
            key = value;
        else if (arg == "--sessions")
            sessions = std::atoi(value);
        else if (arg == "--tls")
            version = value;
        else
            usage();
    }
    if (cert.empty() || key.empty() || sessions <= 0 || (version != "1.2" && version != "1.3"))
        usage();

    buzzer::http::tls_context server_ctx = [&] {
        try {
            return as_server([&] { return buzzer::http::make_tls_context(cert, key); });
        } catch (const std::exception& e) {
            die(e.what());
        }
    }();
    SSL_CTX* client_ctx = SSL_CTX_new(TLS_client_method());
    if (!client_ctx) die("cannot make the client's context");
    const int client_version = version == "1.2" ? TLS1_2_VERSION : TLS1_3_VERSION;
    SSL_CTX_set_min_proto_version(client_ctx, client_version);
    SSL_CTX_set_max_proto_version(client_ctx, client_version);
    SSL_CTX_set_verify(client_ctx, SSL_VERIFY_NONE, nullptr);

    // The first session fills what OpenSSL sets up once (providers, caches): not counted.
    std::vector<session> open{open_session(server_ctx.get(), client_ctx)};
    const auto before = server_allocations();
    for (int i = 0; i < sessions; ++i) open.push_back(open_session(server_ctx.get(), client_ctx));
    const auto after = server_allocations();

    auto rows = growth(before, after, sessions);
    double total = 0;
    double blocks = 0;
    for (const auto& r : rows) {
        total += r.bytes;
        blocks += r.count;
    }

    const SSL* sample = open.back().server;
    std::printf("%s, %s %s, %d idle server sessions\n", OpenSSL_version(OPENSSL_VERSION),
                SSL_get_version(sample), SSL_get_cipher_name(sample), sessions);
    std::printf("%10s %8s  %s\n", "bytes", "blocks", "allocated at (OpenSSL source)");
    for (const auto& r : rows)
        if (r.bytes >= 16) std::printf("%10.1f %8.2f  %s\n", r.bytes, r.count, r.where.c_str());
    std::printf("%10.1f %8.2f  in all, per session (%.2f KiB)\n", total, blocks, total / 1024);

    for (auto& s : open) {
        SSL_free(s.client);
        as_server([&] { SSL_free(s.server); });
    }
    SSL_CTX_free(client_ctx);
    // What the context keeps of the sessions once they are closed: its cache of sessions
    // for resumption by session id, if anything.
    double kept = 0;
    for (const auto& r : growth(before, server_allocations(), sessions)) kept += r.bytes;
    std::printf("%10.1f           per session still held by the context after all are closed\n",
                kept / sessions);
    return 0;
}
