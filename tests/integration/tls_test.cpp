// HTTPS: the real binary with --tls-cert and --tls-key, against curl, openssl s_client and an
// OpenSSL client of the test's own; certificates made with the openssl CLI.
#define BOOST_TEST_MODULE integration_tls
#include <signal.h>

#include <boost/json.hpp>
#include <boost/test/unit_test.hpp>
#include <chrono>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "integration/common.hpp"
#include "support/http_client.hpp"
#include "support/process.hpp"
#include "support/tls_client.hpp"
#include "support/wait.hpp"

namespace test = buzzer::test;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

// Two certificates, and the files a server is given (overwritten to reload it).
struct tls_files {
    test::temp_dir dir{"buzzer-tls-"};
    test::certificate_files first = test::make_self_signed(dir, "first", "buzzer first", 1001);
    test::certificate_files second = test::make_self_signed(dir, "second", "buzzer second", 2002);
    fs::path cert = dir / "server.pem";
    fs::path key = dir / "server.key";

    tls_files() { use(first); }

    // Makes `f` the server's files.
    void use(const test::certificate_files& f) const {
        fs::copy_file(f.cert, cert, fs::copy_options::overwrite_existing);
        fs::copy_file(f.key, key, fs::copy_options::overwrite_existing);
    }

    std::vector<std::string> args(std::vector<std::string> more = {}) const {
        std::vector<std::string> a{"--tls-cert", cert.string(), "--tls-key", key.string()};
        a.insert(a.end(), more.begin(), more.end());
        return a;
    }
};

std::string url(const test::server_process& s, const std::string& target) {
    return "https://127.0.0.1:" + std::to_string(s.port()) + target;
}

// What curl got: the status (0 when there was no response) and the body.
struct curl_result {
    int status = 0;
    std::string body;
    int exit_code = 0;
    std::string err;
};

// Runs curl with `args` (trusting `ca`) and the status on a line of its own after the body.
curl_result curl(const fs::path& ca, std::vector<std::string> args,
                 std::chrono::milliseconds timeout = 20s) {
    std::vector<std::string> a{
        "-sS", "--cacert",      ca.string(), "--max-time", std::to_string(timeout.count() / 1000),
        "-w",  "\n%{http_code}"};
    a.insert(a.end(), args.begin(), args.end());
    auto r = test::run_process("/usr/bin/curl", a, timeout + 5s);
    curl_result out;
    out.exit_code = r.exit_code;
    out.err = r.err;
    auto nl = r.out.rfind('\n');
    if (nl != std::string::npos) {
        out.body = r.out.substr(0, nl);
        out.status = std::atoi(r.out.c_str() + nl + 1);
    }
    return out;
}

test::tls_client_options trusting(const fs::path& ca) {
    test::tls_client_options o;
    o.ca_file = ca.string();
    return o;
}

// Sends a request over `c` and returns its response up to the end of its body (which must
// have a Content-Length).
std::string send_request(test::tls_client& c, const std::string& request) {
    c.send(request);
    return c.receive_until(
        [](const std::string& got) {
            auto end = got.find("\r\n\r\n");
            if (end == std::string::npos) return false;
            auto at = got.find("Content-Length: ");
            if (at == std::string::npos || at > end) return true;
            return got.size() >= end + 4 + std::stoul(got.substr(at + 16));
        },
        10s);
}

std::string get(const std::string& target) {
    return "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
}

// Submits `body` over curl; requires a 202 and returns the operation's id.
std::string submit(const test::server_process& s, const fs::path& ca, const std::string& body) {
    auto r = curl(ca, {"-X", "POST", "-H", "Content-Type: application/json", "-d", body,
                       url(s, "/operations")});
    BOOST_TEST_REQUIRE(r.status == 202, "submit: " << r.status << " " << r.body << r.err);
    return std::string(boost::json::parse(r.body).as_object().at("id").as_string());
}

// Events of type `type` in an event stream's text so far.
std::size_t count_events(const std::string& text, const std::string& type) {
    std::size_t n = 0;
    for (auto at = text.find("event: " + type + "\n"); at != std::string::npos;
         at = text.find("event: " + type + "\n", at + 1))
        ++n;
    return n;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(https)

BOOST_AUTO_TEST_CASE(curl_gets_healthz_and_follows_an_operation_over_https) {
    tls_files files;
    test::server_process server(test::server_options{.args = files.args()});
    BOOST_TEST(server.log_contents().find("listening on https://127.0.0.1:" +
                                          std::to_string(server.port())) != std::string::npos,
               server.log_contents());

    auto health = curl(files.first.cert, {url(server, "/healthz")});
    BOOST_TEST(health.status == 200, health.err);
    BOOST_TEST(health.body == R"({"status":"ok"})");

    auto id = submit(server, files.first.cert, R"({"kind":"echo","input":{"over":"tls"}})");
    // The status monitor long-polls, answers 303 once it succeeded, and -L follows it.
    auto done =
        curl(files.first.cert, {"-L", url(server, "/operations/" + id + "/status?wait=10")});
    BOOST_TEST(done.status == 200, done.err);
    BOOST_TEST(done.body == R"({"over":"tls"})");

    // Plain HTTP to the HTTPS port gets no HTTP answer.
    auto plain =
        test::run_process("/usr/bin/curl",
                          {"-sS", "--max-time", "5",
                           "http://127.0.0.1:" + std::to_string(server.port()) + "/healthz"},
                          10s);
    BOOST_TEST(plain.exit_code != 0);
    BOOST_TEST(plain.out == "");
}

BOOST_AUTO_TEST_CASE(tls_1_2_and_1_3_with_forward_secret_aead_ciphers_only) {
    tls_files files;
    test::server_process server(test::server_options{.args = files.args()});
    const std::string at = "127.0.0.1:" + std::to_string(server.port());
    auto s_client = [&](std::vector<std::string> args) {
        std::vector<std::string> a{"s_client", "-connect", at, "-CAfile",
                                   files.first.cert.string()};
        a.insert(a.end(), args.begin(), args.end());
        auto r = test::run_process("/usr/bin/openssl", a, 20s);
        return r.out + r.err;
    };
    for (std::string v : {"1.2", "1.3"}) {
        auto r = curl(files.first.cert, {"--tlsv" + v, "--tls-max", v, url(server, "/healthz")});
        BOOST_TEST(r.status == 200, v << ": " << r.err);
    }
    // openssl s_client at security level 0 offers TLS 1.0 and 1.1 (curl cannot any more).
    for (std::string v : {"-tls1", "-tls1_1"}) {
        auto out = s_client({v, "-cipher", "DEFAULT@SECLEVEL=0"});
        BOOST_TEST(out.find("Cipher is (NONE)") != std::string::npos, v << ": " << out);
        BOOST_TEST(out.find("alert protocol version") != std::string::npos, v << ": " << out);
    }
    // ... which the control shows: TLS 1.2 with the same client connects.
    auto out = s_client({"-tls1_2"});
    BOOST_TEST(out.find("Protocol  : TLSv1.2") != std::string::npos, out);
    BOOST_TEST(out.find("Cipher is ECDHE-ECDSA-") != std::string::npos, out);
    // A TLS 1.2 cipher without AEAD is refused, with forward secrecy or not.
    for (std::string c : {"ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384"}) {
        out = s_client({"-tls1_2", "-cipher", c});
        BOOST_TEST(out.find("Cipher is (NONE)") != std::string::npos, c << ": " << out);
    }
}

BOOST_AUTO_TEST_CASE(plain_http_and_garbage_are_closed_while_another_client_goes_on) {
    tls_files files;
    test::server_process server(test::server_options{.args = files.args()});
    test::tls_client kept(server.port(), trusting(files.first.cert));
    BOOST_TEST_REQUIRE(kept.handshake() == "");
    BOOST_TEST(send_request(kept, get("/healthz")).ends_with(R"({"status":"ok"})"));

    auto got = test::raw_exchange(server.port(), get("/healthz"), 10s);
    BOOST_TEST(got.find("HTTP/1.") == std::string::npos, got);
    std::mt19937 random(20261203);
    for (int i = 0; i < 5; ++i) {
        std::string garbage(1 + random() % 20000, '\0');
        for (auto& c : garbage) c = static_cast<char>(random());
        // A handshake record's first bytes, then garbage.
        if (i % 2 == 0) garbage.replace(0, 3, "\x16\x03\x01");
        got = test::raw_exchange(server.port(), garbage, 10s);
        BOOST_TEST(got.find("HTTP/1.") == std::string::npos);
    }
    // The connection made before is served all along, and new ones are.
    BOOST_TEST(send_request(kept, get("/healthz")).ends_with(R"({"status":"ok"})"));
    BOOST_TEST(!kept.closed());
    BOOST_TEST(curl(files.first.cert, {url(server, "/healthz")}).status == 200);
    BOOST_TEST(server.running());
    // No line per failed handshake in the log.
    auto log = server.log_contents();
    std::size_t lines = 0;
    for (auto at = log.find("TLS handshake failed"); at != std::string::npos;
         at = log.find("TLS handshake failed", at + 1))
        ++lines;
    BOOST_TEST(lines <= 1u, log);
}

BOOST_AUTO_TEST_CASE(a_client_that_never_handshakes_is_closed_after_the_header_timeout) {
    tls_files files;
    test::server_process server(
        test::server_options{.args = files.args({"--header-timeout", "0.5"})});
    auto silent = test::raw_connect(server.port());
    const auto start = std::chrono::steady_clock::now();
    BOOST_TEST(silent.receive_until_close(10s) == "");
    const auto took = std::chrono::steady_clock::now() - start;
    BOOST_TEST(silent.closed());
    BOOST_TEST((took >= 400ms && took < 3s),
               std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms");
    // A client that starts the handshake and stops halfway is closed too.
    auto halfway = test::raw_connect(server.port());
    BOOST_TEST_REQUIRE(!halfway.send(std::string("\x16\x03\x01\x02\x00", 5)));
    BOOST_TEST(halfway.receive_until_close(10s) == "");
    BOOST_TEST(halfway.closed());
}

BOOST_AUTO_TEST_CASE(curl_follows_an_event_stream_over_https) {
    tls_files files;
    test::server_process server(test::server_options{.args = files.args()});
    auto id =
        submit(server, files.first.cert, R"({"kind":"sleep","input":{"seconds":0.6,"steps":3}})");
    // The stream ends after the terminal event, and curl with it.
    auto r = curl(files.first.cert, {"-N", "-H", "Accept: text/event-stream",
                                     url(server, "/operations/" + id + "/status")});
    BOOST_TEST(r.status == 200, r.err);
    BOOST_TEST(count_events(r.body, "progress") == 3u, r.body);
    BOOST_TEST(count_events(r.body, "completed") == 1u, r.body);
}

BOOST_AUTO_TEST_CASE(sighup_reloads_the_certificate_and_open_streams_go_on) {
    tls_files files;
    test::server_process server(test::server_options{.args = files.args()});
    auto id =
        submit(server, files.first.cert, R"({"kind":"sleep","input":{"seconds":3,"steps":6}})");
    // A stream opened before the reload.
    test::tls_client stream(server.port(), trusting(files.first.cert));
    BOOST_TEST_REQUIRE(stream.handshake() == "");
    BOOST_TEST(stream.peer_serial() == "1001");
    stream.send("GET /operations/" + id +
                "/status HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n");
    std::string events = stream.receive_until(
        [](const std::string& got) { return count_events(got, "progress") >= 1; }, 10s);
    BOOST_TEST_REQUIRE(count_events(events, "progress") >= 1u, events);

    files.use(files.second);
    BOOST_TEST_REQUIRE(::kill(server.pid(), SIGHUP) == 0);
    BOOST_TEST_REQUIRE(test::wait_until(
        [&] { return server.log_contents().find("info reloaded") != std::string::npos; }, 10s));
    test::tls_client fresh(server.port(), trusting(files.second.cert));
    BOOST_TEST_REQUIRE(fresh.handshake() == "");
    BOOST_TEST(fresh.peer_serial() == "2002");
    BOOST_TEST(send_request(fresh, get("/healthz")).ends_with(R"({"status":"ok"})"));
    BOOST_TEST(curl(files.second.cert, {url(server, "/healthz")}).status == 200);

    // The stream opened before goes on to its end.
    events += stream.receive_until(
        [](const std::string& got) { return count_events(got, "completed") >= 1; }, 15s);
    BOOST_TEST(count_events(events, "progress") == 6u, events);
    BOOST_TEST(count_events(events, "completed") == 1u, events);

    // A broken certificate file: an error naming it, and the certificate in use stays.
    fs::copy_file(files.dir.write_file("broken.pem", "-----BEGIN CERTIFICATE-----\nnot base64\n"),
                  files.cert, fs::copy_options::overwrite_existing);
    BOOST_TEST_REQUIRE(::kill(server.pid(), SIGHUP) == 0);
    auto error_line = [&] {
        auto log = server.log_contents();
        auto at = log.find(" error reload: ");
        return at == std::string::npos ? std::string() : log.substr(at, log.find('\n', at) - at);
    };
    BOOST_TEST_REQUIRE(test::wait_until([&] { return !error_line().empty(); }, 10s));
    BOOST_TEST(error_line().find(files.cert.string()) != std::string::npos, error_line());
    test::tls_client after(server.port(), trusting(files.second.cert));
    BOOST_TEST_REQUIRE(after.handshake() == "");
    BOOST_TEST(after.peer_serial() == "2002");

    // A key that does not match the certificate: the key file is named.
    files.use(files.first);
    fs::copy_file(files.second.key, files.key, fs::copy_options::overwrite_existing);
    BOOST_TEST_REQUIRE(::kill(server.pid(), SIGHUP) == 0);
    BOOST_TEST_REQUIRE(test::wait_until(
        [&] {
            return server.log_contents().find(files.key.string() + ": the key does not match") !=
                   std::string::npos;
        },
        10s));
    BOOST_TEST(curl(files.second.cert, {url(server, "/healthz")}).status == 200);
    BOOST_TEST(server.terminate() == 0);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(tls_configuration)

BOOST_AUTO_TEST_CASE(a_certificate_without_its_key_or_a_key_alone_is_a_configuration_error) {
    tls_files files;
    auto r = test::run_buzzer({"--listen", "127.0.0.1:0", "--tls-cert", files.cert.string()});
    BOOST_TEST(r.exit_code == 2);
    BOOST_TEST(r.err.find("--tls-key") != std::string::npos, r.err);
    r = test::run_buzzer({"--listen", "127.0.0.1:0", "--tls-key", files.key.string()});
    BOOST_TEST(r.exit_code == 2);
    BOOST_TEST(r.err.find("--tls-cert") != std::string::npos, r.err);
    auto config =
        files.dir.write_file("buzzer.json", R"({"tls_cert": ")" + files.cert.string() + R"("})");
    r = test::run_buzzer({"--listen", "127.0.0.1:0", "--config", config.string()});
    BOOST_TEST(r.exit_code == 2);
    BOOST_TEST(r.err.find("tls-key") != std::string::npos, r.err);
    r = test::run_buzzer({"--listen", "127.0.0.1:0", "--tls-cert", "", "--tls-key", "k"});
    BOOST_TEST(r.exit_code == 2);
    BOOST_TEST(r.err.find("--tls-cert") != std::string::npos, r.err);
}

BOOST_AUTO_TEST_CASE(the_configuration_file_sets_both) {
    tls_files files;
    auto config = files.dir.write_file("buzzer.json", R"({"tls_cert": ")" + files.cert.string() +
                                                          R"(", "tls_key": ")" +
                                                          files.key.string() + R"("})");
    test::server_process server(test::server_options{.args = {"--config", config.string()}});
    BOOST_TEST(curl(files.first.cert, {url(server, "/healthz")}).status == 200);
}

BOOST_AUTO_TEST_CASE(a_certificate_that_does_not_load_stops_the_start_naming_the_file) {
    tls_files files;
    const auto missing = (files.dir / "missing.pem").string();
    auto r = test::run_buzzer({"--listen", "127.0.0.1:0", "--database", (files.dir / "db").string(),
                               "--tls-cert", missing, "--tls-key", files.key.string()});
    BOOST_TEST(r.exit_code == 1);
    BOOST_TEST(r.err.find(missing) != std::string::npos, r.err);
    BOOST_TEST(r.out.find("listening") == std::string::npos, r.out);
}

BOOST_AUTO_TEST_SUITE_END()
