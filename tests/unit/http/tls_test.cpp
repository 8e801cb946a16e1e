// The TLS context and stream over loopback, against a real OpenSSL client.
#include <array>
#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/test/unit_test.hpp>
#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <string>

#include "http/tls_context.hpp"
#include "http/tls_stream.hpp"
#include "support/http_client.hpp"
#include "support/loopback_server.hpp"
#include "support/process.hpp"
#include "support/tls_client.hpp"

namespace asio = boost::asio;
namespace http = buzzer::http;
namespace test = buzzer::test;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;
constexpr auto tuple_awaitable = asio::as_tuple(asio::use_awaitable);

namespace {

// The certificates of these tests, made once.
struct certificates {
    test::temp_dir dir{"buzzer-tls-unit-"};
    test::certificate_files self = test::make_self_signed(dir, "self", "buzzer test", 1001);
    test::certificate_files other = test::make_self_signed(dir, "other", "buzzer other", 2002);
    test::certificate_files chain = test::make_chain(dir, "chained");
};

const certificates& certs() {
    static const certificates c;
    return c;
}

// The message of make_tls_context's exception, or "" when it loads.
std::string load_error(const std::string& cert, const std::string& key) {
    try {
        http::make_tls_context(cert, key);
    } catch (const std::runtime_error& e) {
        return e.what();
    }
    return {};
}

// A loopback server whose every connection runs `session` over a tls_stream of `ctx`; what
// the session reports arrives in result().
class tls_server {
  public:
    using session = std::function<asio::awaitable<std::string>(http::tls_stream&)>;

    tls_server(http::tls_context ctx, session s)
        : ctx_(std::move(ctx)),
          session_(std::move(s)),
          server_([this](tcp::socket socket) { return run(std::move(socket)); }) {}

    unsigned short port() const { return server_.port(); }

    // What the first session returned (or threw), within 10 s.
    std::string result() {
        auto f = result_.get_future();
        if (f.wait_for(10s) != std::future_status::ready) return "no result within 10 s";
        return f.get();
    }

  private:
    asio::awaitable<void> run(tcp::socket socket) {
        std::string out;
        try {
            http::tls_stream stream(std::move(socket), ctx_.get());
            out = co_await session_(stream);
        } catch (const std::exception& e) {
            out = std::string("threw: ") + e.what();
        }
        if (!reported_.exchange(true)) result_.set_value(out);
    }

    http::tls_context ctx_;
    session session_;
    std::promise<std::string> result_;
    std::atomic<bool> reported_{false};
    test::loopback_server server_;  // last: its thread stops first
};

// A handshake that reports its failure as the session's result.
asio::awaitable<bool> handshake(http::tls_stream& s, std::string& failure) {
    s.expires_after(5s);
    auto [ec] = co_await s.async_handshake(tuple_awaitable);
    if (ec) failure = "handshake: " + ec.message();
    co_return !ec;
}

test::tls_client_options trusting(const std::filesystem::path& ca) {
    test::tls_client_options o;
    o.ca_file = ca.string();
    return o;
}

// A session that answers "pong" to whatever it reads first, then ends with close_notify.
asio::awaitable<std::string> pong(http::tls_stream& s) {
    std::string failure;
    if (!co_await handshake(s, failure)) co_return failure;
    char buf[256];
    auto [ec, n] = co_await s.async_read_some(asio::buffer(buf), tuple_awaitable);
    if (ec) co_return "read: " + ec.message();
    co_await asio::async_write(s, asio::buffer(std::string_view("pong")), asio::use_awaitable);
    s.expires_after(1s);
    co_await s.async_shutdown(tuple_awaitable);
    co_return std::string(buf, n);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(tls_context)

BOOST_AUTO_TEST_CASE(loads_a_certificate_and_its_key) {
    BOOST_TEST(load_error(certs().self.cert, certs().self.key) == "");
}

BOOST_AUTO_TEST_CASE(names_a_file_that_does_not_exist_and_why) {
    const auto missing = (certs().dir / "missing.pem").string();
    auto what = load_error(missing, certs().self.key);
    BOOST_TEST(what.find(missing) != std::string::npos, what);
    BOOST_TEST(what.find("No such file") != std::string::npos, what);
    what = load_error(certs().self.cert, missing);
    BOOST_TEST(what.find(missing) != std::string::npos, what);
}

BOOST_AUTO_TEST_CASE(names_a_file_that_holds_no_certificate_or_no_key) {
    const auto garbage = certs().dir.write_file("garbage.pem", "not a certificate\n").string();
    const auto empty = certs().dir.write_file("empty.pem", "").string();
    for (const auto& bad : {garbage, empty}) {
        auto what = load_error(bad, certs().self.key);
        BOOST_TEST(what.starts_with(bad + ": "), what);
        BOOST_TEST(what.find("certificate") != std::string::npos, what);
        what = load_error(certs().self.cert, bad);
        BOOST_TEST(what.starts_with(bad + ": "), what);
        BOOST_TEST(what.find("key") != std::string::npos, what);
    }
    // A key where the certificate belongs, and the other way round.
    auto what = load_error(certs().self.key, certs().self.key);
    BOOST_TEST(what.starts_with(certs().self.key.string() + ": "), what);
    what = load_error(certs().self.cert, certs().self.cert);
    BOOST_TEST(what.starts_with(certs().self.cert.string() + ": "), what);
}

BOOST_AUTO_TEST_CASE(names_a_key_that_does_not_match_the_certificate) {
    auto what = load_error(certs().self.cert, certs().other.key);
    BOOST_TEST(what.starts_with(certs().other.key.string() + ": "), what);
    BOOST_TEST(what.find("does not match") != std::string::npos, what);
}

BOOST_AUTO_TEST_CASE(refuses_an_encrypted_key_without_asking_for_its_passphrase) {
    const auto encrypted = (certs().dir / "encrypted.key").string();
    auto r =
        test::run_process("/usr/bin/openssl", {"pkey", "-in", certs().self.key.string(), "-aes256",
                                               "-passout", "pass:secret", "-out", encrypted});
    BOOST_TEST_REQUIRE(r.exit_code == 0, r.err);
    auto what = load_error(certs().self.cert, encrypted);
    BOOST_TEST(what.starts_with(encrypted + ": "), what);
}

BOOST_AUTO_TEST_CASE(sends_the_chain_that_follows_the_leaf) {
    tls_server server(http::make_tls_context(certs().chain.cert, certs().chain.key), pong);
    // Only the root is trusted: the handshake verifies only if the intermediate is sent.
    test::tls_client c(server.port(), trusting(certs().dir / "chained-root.pem"));
    BOOST_TEST_REQUIRE(c.handshake() == "");
    BOOST_TEST(c.peer_chain_length() == 2);
    c.send("ping");
    BOOST_TEST(c.receive_until_close(5s) == "pong");
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(tls_protocols)

BOOST_AUTO_TEST_CASE(tls_1_2_and_1_3_are_spoken) {
    auto ctx = http::make_tls_context(certs().self.cert, certs().self.key);
    for (int version : {TLS1_2_VERSION, TLS1_3_VERSION}) {
        tls_server server(ctx, pong);
        auto o = trusting(certs().self.cert);
        o.min_version = o.max_version = version;
        test::tls_client c(server.port(), o);
        BOOST_TEST_REQUIRE(c.handshake() == "");
        BOOST_TEST(c.protocol() == (version == TLS1_2_VERSION ? "TLSv1.2" : "TLSv1.3"));
        c.send("ping");
        BOOST_TEST(c.receive_until_close(5s) == "pong");
        BOOST_TEST(c.received_close_notify());
        BOOST_TEST(server.result() == "ping");
    }
}

BOOST_AUTO_TEST_CASE(older_protocols_are_refused) {
    auto ctx = http::make_tls_context(certs().self.cert, certs().self.key);
    for (int version : {TLS1_VERSION, TLS1_1_VERSION}) {
        tls_server server(ctx, pong);
        test::tls_client_options o;
        // A client that would speak it: the old protocols need security level 0.
        o.security_level = 0;
        o.ciphers = "DEFAULT@SECLEVEL=0";
        o.min_version = o.max_version = version;
        test::tls_client c(server.port(), o);
        BOOST_TEST(c.handshake() != "");
        BOOST_TEST(server.result().starts_with("handshake: "));
    }
}

BOOST_AUTO_TEST_CASE(tls_1_2_ciphers_without_forward_secrecy_or_aead_are_refused) {
    auto ctx = http::make_tls_context(certs().self.cert, certs().self.key);
    // CBC suites with ECDHE, and the ECDHE AEAD suites that are the control.
    for (std::string cipher : {"ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384",
                               "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"}) {
        BOOST_TEST_CONTEXT(cipher) {
            tls_server server(ctx, pong);
            auto o = trusting(certs().self.cert);
            o.max_version = TLS1_2_VERSION;
            o.ciphers = cipher;
            o.security_level = 0;
            test::tls_client c(server.port(), o);
            const bool aead = cipher.find("GCM") != std::string::npos ||
                              cipher.find("CHACHA") != std::string::npos;
            BOOST_TEST((c.handshake() == "") == aead);
        }
    }
}

BOOST_AUTO_TEST_CASE(a_tls_1_2_rsa_key_exchange_is_refused) {
    // An RSA certificate, so that a static RSA key exchange (no forward secrecy) is possible.
    auto dir = test::temp_dir("buzzer-tls-rsa-");
    test::certificate_files rsa{dir / "rsa.pem", dir / "rsa.key"};
    auto r = test::run_process("/usr/bin/openssl",
                               {"req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                                rsa.key.string(), "-out", rsa.cert.string(), "-days", "2", "-subj",
                                "/CN=rsa", "-addext", "subjectAltName=IP:127.0.0.1"});
    BOOST_TEST_REQUIRE(r.exit_code == 0, r.err);
    auto ctx = http::make_tls_context(rsa.cert, rsa.key);
    for (std::string cipher : {"AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256"}) {
        BOOST_TEST_CONTEXT(cipher) {
            tls_server server(ctx, pong);
            auto o = trusting(rsa.cert);
            o.max_version = TLS1_2_VERSION;
            o.ciphers = cipher;
            test::tls_client c(server.port(), o);
            BOOST_TEST((c.handshake() == "") == cipher.starts_with("ECDHE"));
        }
    }
}

BOOST_AUTO_TEST_CASE(a_session_is_resumed) {
    auto ctx = http::make_tls_context(certs().self.cert, certs().self.key);
    for (int version : {TLS1_2_VERSION, TLS1_3_VERSION}) {
        BOOST_TEST_CONTEXT(version) {
            SSL_SESSION* session = nullptr;
            {
                tls_server server(ctx, pong);
                auto o = trusting(certs().self.cert);
                o.max_version = version;
                test::tls_client first(server.port(), o);
                BOOST_TEST_REQUIRE(first.handshake() == "");
                first.send("ping");
                // The TLS 1.3 tickets come after the handshake, before the answer.
                BOOST_TEST(first.receive_until_close(5s) == "pong");
                BOOST_TEST(!first.resumed());
                session = first.session();
                first.shutdown();  // a session that ends without close_notify is not resumed
            }
            tls_server server(ctx, pong);
            auto o = trusting(certs().self.cert);
            o.max_version = version;
            test::tls_client again(server.port(), o);
            again.resume(session);
            BOOST_TEST_REQUIRE(again.handshake() == "");
            BOOST_TEST(again.resumed());
        }
    }
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(tls_stream)

BOOST_AUTO_TEST_CASE(a_read_takes_what_openssl_decrypted_before_waiting_for_the_socket) {
    // Ten bytes arrive in one record; ten reads of one byte each must all complete without
    // more bytes on the socket (a read that waited first would time out).
    tls_server server(http::make_tls_context(certs().self.cert, certs().self.key),
                      [](http::tls_stream& s) -> asio::awaitable<std::string> {
                          std::string failure;
                          if (!co_await handshake(s, failure)) co_return failure;
                          std::string got;
                          for (int i = 0; i < 10; ++i) {
                              char c = 0;
                              s.expires_after(2s);
                              auto [ec, n] =
                                  co_await s.async_read_some(asio::buffer(&c, 1), tuple_awaitable);
                              if (ec) co_return got + " then " + ec.message();
                              got.append(&c, n);
                          }
                          co_return got;
                      });
    test::tls_client c(server.port(), trusting(certs().self.cert));
    BOOST_TEST_REQUIRE(c.handshake() == "");
    c.send("0123456789");
    BOOST_TEST(server.result() == "0123456789");
}

BOOST_AUTO_TEST_CASE(large_writes_and_reads_go_through_whole) {
    // 4 MiB each way: more than the socket buffers hold, so that writes wait for the socket
    // and go out a record at a time.
    constexpr std::size_t size = 4 << 20;
    tls_server server(
        http::make_tls_context(certs().self.cert, certs().self.key),
        [](http::tls_stream& s) -> asio::awaitable<std::string> {
            std::string failure;
            if (!co_await handshake(s, failure)) co_return failure;
            std::string in(size, '\0');
            s.expires_after(20s);
            auto [ec, n] = co_await asio::async_read(s, asio::buffer(in), tuple_awaitable);
            if (ec) co_return "read: " + ec.message();
            for (std::size_t i = 0; i < size; ++i)
                if (in[i] != static_cast<char>('a' + i % 26)) co_return "read a wrong byte";
            std::string out(size, '\0');
            for (std::size_t i = 0; i < size; ++i) out[i] = static_cast<char>('A' + i % 26);
            std::string head = "size " + std::to_string(size) + "\n";
            std::array<asio::const_buffer, 2> both{asio::buffer(head), asio::buffer(out)};
            s.expires_after(20s);
            auto [wec, wn] = co_await asio::async_write(s, both, tuple_awaitable);
            if (wec) co_return "write: " + wec.message();
            co_return "wrote " + std::to_string(wn);
        });
    test::tls_client c(server.port(), trusting(certs().self.cert));
    BOOST_TEST_REQUIRE(c.handshake() == "");
    std::string out(size, '\0');
    for (std::size_t i = 0; i < size; ++i) out[i] = static_cast<char>('a' + i % 26);
    c.send(out);
    const std::string head = "size " + std::to_string(size) + "\n";
    auto got =
        c.receive_until([&](const std::string& g) { return g.size() >= head.size() + size; }, 20s);
    BOOST_TEST_REQUIRE(got.size() == head.size() + size);
    BOOST_TEST(got.substr(0, head.size()) == head);
    bool same = true;
    for (std::size_t i = 0; i < size && same; ++i)
        same = got[head.size() + i] == static_cast<char>('A' + i % 26);
    BOOST_TEST(same);
    BOOST_TEST(server.result() == "wrote " + std::to_string(head.size() + size));
}

BOOST_AUTO_TEST_CASE(a_handshake_that_does_not_come_ends_at_the_deadline) {
    tls_server server(http::make_tls_context(certs().self.cert, certs().self.key),
                      [](http::tls_stream& s) -> asio::awaitable<std::string> {
                          s.expires_after(300ms);
                          const auto start = std::chrono::steady_clock::now();
                          auto [ec] = co_await s.async_handshake(tuple_awaitable);
                          const auto took = std::chrono::steady_clock::now() - start;
                          if (ec != boost::beast::error::timeout) co_return ec.message();
                          co_return took<250ms ? "too early" : took> 3s ? "too late" : "timeout";
                      });
    auto raw = test::raw_connect(server.port());  // connects, never says a word
    BOOST_TEST(server.result() == "timeout");
    BOOST_TEST(raw.receive_until_close(5s) == "");
    BOOST_TEST(raw.closed());
}

BOOST_AUTO_TEST_CASE(plain_http_fails_the_handshake_with_a_tls_error) {
    tls_server server(http::make_tls_context(certs().self.cert, certs().self.key),
                      [](http::tls_stream& s) -> asio::awaitable<std::string> {
                          s.expires_after(5s);
                          auto [ec] = co_await s.async_handshake(tuple_awaitable);
                          co_return ec.category() == http::tls_category() ? "tls: " + ec.message()
                                                                          : ec.message();
                      });
    test::raw_exchange(server.port(), "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 5s);
    auto result = server.result();
    BOOST_TEST(result.starts_with("tls: "), result);
}

BOOST_AUTO_TEST_CASE(a_write_to_a_client_that_does_not_read_ends_at_the_deadline) {
    tls_server server(http::make_tls_context(certs().self.cert, certs().self.key),
                      [](http::tls_stream& s) -> asio::awaitable<std::string> {
                          std::string failure;
                          if (!co_await handshake(s, failure)) co_return failure;
                          std::string lots(64 << 20, 'x');
                          s.expires_after(300ms);
                          auto [ec, n] =
                              co_await asio::async_write(s, asio::buffer(lots), tuple_awaitable);
                          co_return ec == boost::beast::error::timeout ? "timeout" : ec.message();
                      });
    test::tls_client c(server.port(), trusting(certs().self.cert));
    BOOST_TEST_REQUIRE(c.handshake() == "");
    BOOST_TEST(server.result() == "timeout");
}

// A session that reads "watch\n", then reports how the watch for the client's end went:
// "gone" when it fired, else what the next read got.
asio::awaitable<std::string> watching(http::tls_stream& s, bool any_byte) {
    std::string failure;
    if (!co_await handshake(s, failure)) co_return failure;
    char buf[64];
    auto [ec, n] = co_await s.async_read_some(asio::buffer(buf), tuple_awaitable);
    if (ec || std::string_view(buf, n) != "watch\n") co_return "no watch request";
    auto gone = std::make_shared<bool>(false);
    s.watch_client_end(any_byte, [gone] { *gone = true; });
    co_await asio::async_write(s, asio::buffer(std::string_view("watching\n")),
                               asio::use_awaitable);
    // The client's next move arrives; the watch has a second to see it.
    asio::steady_timer t(s.get_executor());
    for (int i = 0; i < 50 && !*gone; ++i) {
        t.expires_after(20ms);
        co_await t.async_wait(tuple_awaitable);
    }
    if (*gone) co_return "gone";
    s.cancel_watch();
    s.expires_after(2s);
    auto [rec, rn] = co_await s.async_read_some(asio::buffer(buf), tuple_awaitable);
    if (rec) co_return "read: " + rec.message();
    co_return "read " + std::string(buf, rn);
}

BOOST_AUTO_TEST_CASE(a_client_end_watch_sees_close_notify_and_the_end_of_the_stream) {
    for (bool any_byte : {false, true}) {
        for (bool notify : {true, false}) {
            BOOST_TEST_CONTEXT("any_byte " << any_byte << ", close_notify " << notify) {
                tls_server server(
                    http::make_tls_context(certs().self.cert, certs().self.key),
                    [any_byte](http::tls_stream& s) { return watching(s, any_byte); });
                test::tls_client c(server.port(), trusting(certs().self.cert));
                BOOST_TEST_REQUIRE(c.handshake() == "");
                c.send("watch\n");
                BOOST_TEST(c.receive_until([](const std::string& g) { return g == "watching\n"; },
                                           5s) == "watching\n");
                if (notify) c.shutdown();
                c.close();
                BOOST_TEST(server.result() == "gone");
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(a_client_end_watch_leaves_data_for_the_read_unless_any_byte_ends_it) {
    for (bool any_byte : {false, true}) {
        BOOST_TEST_CONTEXT("any_byte " << any_byte) {
            tls_server server(http::make_tls_context(certs().self.cert, certs().self.key),
                              [any_byte](http::tls_stream& s) { return watching(s, any_byte); });
            test::tls_client c(server.port(), trusting(certs().self.cert));
            BOOST_TEST_REQUIRE(c.handshake() == "");
            c.send("watch\n");
            BOOST_TEST(c.receive_until([](const std::string& g) { return g == "watching\n"; },
                                       5s) == "watching\n");
            c.send("next request");
            BOOST_TEST(server.result() == (any_byte ? "gone" : "read next request"));
        }
    }
}

BOOST_AUTO_TEST_SUITE_END()
