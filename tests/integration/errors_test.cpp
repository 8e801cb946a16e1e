// Bad input against the real server: every rejection is the status and problem+json body that
// API.md promises, and no malformed request, slow client or vanished client hurts the server.
#define BOOST_TEST_MODULE integration_errors
#include <boost/test/unit_test.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "integration/common.hpp"
#include "support/sse_client.hpp"

using namespace buzzer::test;
namespace json = boost::json;
using namespace std::chrono_literals;
using namespace std::string_literals;

namespace {

using steady = std::chrono::steady_clock;

// Milliseconds since `start`, printable in failed checks.
long long ms_since(steady::time_point start) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - start).count();
}

// A well-formed ULID that no server in these tests ever issued (its time part is 2024).
constexpr std::string_view unknown_id = "01JDB6Q6X8Z3M9J1V7QJ4T2N5K";
// One MiB: the default body limit.
constexpr std::size_t mib = 1024 * 1024;

// One server for the whole module: the abuse accumulates on it. Every case ends by checking
// that it is still up and answering (server_still_up), so a case that kills or wedges it fails
// itself, in whatever order the cases run (--random).
struct shared_server {
    shared_server() { instance = std::make_unique<server_process>(); }
    ~shared_server() { instance.reset(); }
    inline static std::unique_ptr<server_process> instance;
};

BOOST_TEST_GLOBAL_FIXTURE(shared_server);

server_process& server() { return *shared_server::instance; }
unsigned short port() { return shared_server::instance->port(); }

// Checks an RFC 9457 problem: status, media type, and the five members with `status` equal to
// the HTTP status. `instance` is checked when given.
void expect_problem(const response& r, int status, std::string_view slug,
                    std::optional<std::string_view> instance = std::nullopt) {
    BOOST_TEST(r.status == status, "status " << r.status << " (want " << status << "): " << r.body);
    BOOST_TEST(r.header("Content-Type").starts_with("application/problem+json"),
               "Content-Type is '" << r.header("Content-Type") << "'");
    // Plain checks, not REQUIREs: the caller's other cases still run after a failure here.
    json::error_code ec;
    auto body = json::parse(r.body, ec);
    BOOST_TEST((!ec && body.is_object()), "problem body is not a JSON object: " << r.body);
    if (ec || !body.is_object()) return;
    const auto& p = body.as_object();
    const auto* type = p.if_contains("type");
    BOOST_TEST((type && type->is_string()), "no string type: " << r.body);
    if (!type || !type->is_string()) return;  // not a problem at all: the rest would only echo
    BOOST_TEST(type->as_string().starts_with("/problems/"), "type " << type->as_string());
    BOOST_TEST(type->as_string() == "/problems/" + std::string(slug), "type " << type->as_string());
    const auto* title = p.if_contains("title");
    BOOST_TEST((title && title->is_string() && !title->as_string().empty()), "title: " << r.body);
    const auto* st = p.if_contains("status");
    BOOST_TEST((st && st->is_int64() && st->as_int64() == r.status), "status member: " << r.body);
    const auto* detail = p.if_contains("detail");
    BOOST_TEST((detail && detail->is_string() && !detail->as_string().empty()),
               "detail: " << r.body);
    // `instance` is optional (RFC 9457), but never an empty string.
    const auto* inst = p.if_contains("instance");
    BOOST_TEST((!inst || (inst->is_string() && !inst->as_string().empty())),
               "instance: " << r.body);
    if (instance) BOOST_TEST((inst && inst->is_string() && inst->as_string() == *instance));
}

// Splits complete HTTP responses off the front of `bytes` (Content-Length or chunked bodies;
// a response without either is complete only when `closed`). Parsed bytes are removed.
std::vector<response> take_responses(std::string& bytes, bool closed) {
    std::vector<response> out;
    for (;;) {
        auto head_end = bytes.find("\r\n\r\n");
        if (head_end == std::string::npos) break;
        response r;
        std::string_view head(bytes.data(), head_end);
        auto line_end = head.find("\r\n");
        std::string_view status_line = head.substr(0, line_end);
        if (!status_line.starts_with("HTTP/1.") || status_line.size() < 12) {
            throw std::runtime_error("not an HTTP response: " + bytes.substr(0, 200));
        }
        r.status = std::stoi(std::string(status_line.substr(9, 3)));
        std::string_view rest =
            line_end == std::string_view::npos ? std::string_view() : head.substr(line_end + 2);
        while (!rest.empty()) {
            auto eol = rest.find("\r\n");
            auto line = rest.substr(0, eol);
            rest = eol == std::string_view::npos ? std::string_view() : rest.substr(eol + 2);
            auto colon = line.find(':');
            if (colon == std::string_view::npos) continue;
            auto value = line.substr(colon + 1);
            while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
            while (!value.empty() && value.back() == ' ') value.remove_suffix(1);
            r.fields.emplace_back(std::string(line.substr(0, colon)), std::string(value));
        }
        std::size_t pos = head_end + 4;
        if (r.has_header("Content-Length")) {
            auto n = std::stoull(r.header("Content-Length"));
            if (bytes.size() < pos + n) break;
            r.body = bytes.substr(pos, n);
            pos += n;
        } else if (r.header("Transfer-Encoding").find("chunked") != std::string::npos) {
            bool complete = false;
            std::string body;
            for (;;) {
                auto eol = bytes.find("\r\n", pos);
                if (eol == std::string::npos) break;
                auto size = std::stoull(bytes.substr(pos, eol - pos), nullptr, 16);
                if (bytes.size() < eol + 2 + size + 2) break;
                body += bytes.substr(eol + 2, size);
                pos = eol + 2 + size + 2;
                if (size == 0) {
                    complete = true;
                    break;
                }
            }
            if (!complete) break;
            r.body = std::move(body);
        } else if (r.status == 204 || r.status == 304) {
            // No body.
        } else {
            if (!closed) break;
            r.body = bytes.substr(pos);
            pos = bytes.size();
        }
        bytes.erase(0, pos);
        out.push_back(std::move(r));
    }
    return out;
}

// Reads from `c` until `count` responses are complete, the server closes, or `deadline`.
std::vector<response> read_responses(raw_connection& c, std::size_t count,
                                     std::chrono::milliseconds deadline) {
    auto const end = steady::now() + deadline;
    std::string bytes;
    std::vector<response> out;
    while (out.size() < count && steady::now() < end) {
        bytes += c.receive(std::chrono::ceil<std::chrono::milliseconds>(end - steady::now()));
        for (auto& r : take_responses(bytes, c.closed())) out.push_back(std::move(r));
        if (c.closed()) break;
    }
    return out;
}

// The one response of a connection the server is expected to answer and then close.
struct closing_answer {
    std::optional<response> reply;  // the parsed response, if any arrived
    bool closed = false;            // the server closed within the deadline
    std::chrono::milliseconds took{0};
    std::string raw;  // what arrived, for messages
};

// Sends `bytes` on a new connection (ignoring a failed send: the server may reject early) and
// reads until the server closes or `deadline` passes.
closing_answer exchange_and_close(std::string_view bytes,
                                  std::chrono::milliseconds deadline = 10s) {
    closing_answer a;
    auto const start = steady::now();
    raw_connection c(port());
    (void)c.send(bytes, deadline);
    a.raw = c.receive_until_close(deadline);
    a.closed = c.closed();
    a.took = std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - start);
    std::string rest = a.raw;
    auto parsed = take_responses(rest, true);
    if (!parsed.empty()) a.reply = std::move(parsed.front());
    return a;
}

// The server answers a fresh connection: GET /healthz is 200 {"status":"ok"}.
void expect_healthy(unsigned short p) {
    http_client fresh(p, 10s);
    auto r = fresh.get("/healthz");
    BOOST_TEST(r.status == 200);
    BOOST_TEST(r.body.find("\"ok\"") != std::string::npos, r.body);
}

// The fixture of every case: after the case, the shared server still runs and answers a new
// connection. One that died is reported (with its log) and replaced, so that the cases after
// it test a server of their own rather than fail with it.
struct server_still_up {
    void teardown() {
        if (!server().running()) {
            BOOST_ERROR("the shared server exited with status "
                        << server().wait_exit(0ms).value_or(-1) << " (134 = SIGABRT); log:\n"
                        << server().log_contents(4000));
            shared_server::instance = std::make_unique<server_process>();
            return;
        }
        expect_healthy(port());
    }
};

// A POST /operations request head (HTTP/1.1) with the given framing field and content type.
std::string post_head(std::string_view framing,
                      std::string_view content_type = "application/json") {
    return "POST /operations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: " +
           std::string(content_type) + "\r\n" + std::string(framing) + "\r\n\r\n";
}

// A valid echo submission whose whole body is exactly `size` bytes.
std::string echo_body_of_size(std::size_t size) {
    std::string const prefix = R"({"kind":"echo","input":")";
    std::string const suffix = R"("})";
    return prefix + std::string(size - prefix.size() - suffix.size(), 'a') + suffix;
}

// A case of POST /operations that must be rejected.
struct bad_submit {
    std::string what;
    std::string body;
    int status;
    std::string slug;
};

void expect_rejected(http_client& c, const std::vector<bad_submit>& cases) {
    for (const auto& k : cases) {
        BOOST_TEST_CONTEXT(k.what << ": " << k.body) {
            expect_problem(c.post_json("/operations", k.body), k.status, k.slug, "/operations");
        }
    }
}

}  // namespace

// ---------------------------------------------------------------------------------------------

BOOST_FIXTURE_TEST_SUITE(submit_errors, server_still_up)

BOOST_AUTO_TEST_CASE(malformed_json_is_400) {
    http_client c(port());
    expect_rejected(c, {
                           {"truncated", R"({"kind":)", 400, "malformed-json"},
                           {"not JSON at all", "not json", 400, "malformed-json"},
                           {"trailing comma", R"({"kind":"echo",})", 400, "malformed-json"},
                           {"empty body", "", 400, "malformed-json"},
                           {"two values", R"({"kind":"echo"} {})", 400, "malformed-json"},
                       });
}

BOOST_AUTO_TEST_CASE(body_that_is_not_an_object_is_400) {
    http_client c(port());
    expect_rejected(c, {
                           {"array", R"([{"kind":"echo"}])", 400, "invalid-request"},
                           {"string", R"("echo")", 400, "invalid-request"},
                           {"number", "42", 400, "invalid-request"},
                           {"null", "null", 400, "invalid-request"},
                       });
}

BOOST_AUTO_TEST_CASE(missing_or_non_string_kind_is_400) {
    http_client c(port());
    expect_rejected(c, {
                           {"empty object", "{}", 400, "invalid-request"},
                           {"no kind", R"({"input":{"seconds":1}})", 400, "invalid-request"},
                           {"kind number", R"({"kind":42})", 400, "invalid-request"},
                           {"kind array", R"({"kind":["echo"]})", 400, "invalid-request"},
                           {"kind object", R"({"kind":{"name":"echo"}})", 400, "invalid-request"},
                           {"kind bool", R"({"kind":true})", 400, "invalid-request"},
                       });
}

BOOST_AUTO_TEST_CASE(fields_of_the_wrong_json_type_are_400) {
    http_client c(port());
    expect_rejected(
        c,
        {
            {"priority string", R"({"kind":"echo","priority":"high"})", 400, "invalid-request"},
            {"priority bool", R"({"kind":"echo","priority":true})", 400, "invalid-request"},
            {"priority array", R"({"kind":"echo","priority":[1]})", 400, "invalid-request"},
            {"max_attempts string", R"({"kind":"echo","max_attempts":"3"})", 400,
             "invalid-request"},
            {"max_attempts object", R"({"kind":"echo","max_attempts":{}})", 400, "invalid-request"},
            {"timeout_s string", R"({"kind":"echo","timeout_s":"60"})", 400, "invalid-request"},
            {"timeout_s bool", R"({"kind":"echo","timeout_s":false})", 400, "invalid-request"},
        });
}

BOOST_AUTO_TEST_CASE(unknown_kind_is_422) {
    http_client c(port());
    expect_rejected(c, {
                           {"unknown", R"({"kind":"no-such-kind"})", 422, "unknown-kind"},
                           {"empty", R"({"kind":""})", 422, "unknown-kind"},
                       });
}

BOOST_AUTO_TEST_CASE(numbers_out_of_range_are_422) {
    http_client c(port());
    expect_rejected(
        c,
        {
            {"timeout_s 0", R"({"kind":"echo","timeout_s":0})", 422, "invalid-request"},
            {"timeout_s negative", R"({"kind":"echo","timeout_s":-5})", 422, "invalid-request"},
            {"timeout_s 86401", R"({"kind":"echo","timeout_s":86401})", 422, "invalid-request"},
            {"max_attempts 0", R"({"kind":"echo","max_attempts":0})", 422, "invalid-request"},
            {"max_attempts 101", R"({"kind":"echo","max_attempts":101})", 422, "invalid-request"},
            {"priority 101", R"({"kind":"echo","priority":101})", 422, "invalid-request"},
            {"priority -101", R"({"kind":"echo","priority":-101})", 422, "invalid-request"},
            // A number is the right JSON type; a fraction is not an acceptable value.
            {"priority 1.5", R"({"kind":"echo","priority":1.5})", 422, "invalid-request"},
            {"max_attempts 2.5", R"({"kind":"echo","max_attempts":2.5})", 422, "invalid-request"},
            {"timeout_s 1e400", R"({"kind":"echo","timeout_s":1e400})", 422, "invalid-request"},
        });
}

BOOST_AUTO_TEST_CASE(deeply_nested_input_is_accepted_up_to_the_limit_and_422_past_it) {
    http_client c(port());
    auto nested = [](int depth) {
        return R"({"kind":"echo","input":)" + std::string(depth, '[') + std::string(depth, ']') +
               "}";
    };
    auto r = c.post_json("/operations", nested(500));
    BOOST_TEST(r.status == 202, r.body);
    // Still JSON, so not 400: well-formed but unacceptable.
    expect_rejected(c, {{"600 levels", nested(600), 422, "invalid-request"},
                        {"100,000 levels", nested(100000), 422, "invalid-request"}});
}

BOOST_AUTO_TEST_CASE(range_limits_themselves_are_accepted) {
    http_client c(port());
    for (std::string body :
         {R"({"kind":"echo","timeout_s":86400})", R"({"kind":"echo","timeout_s":0.5})",
          R"({"kind":"echo","max_attempts":1})", R"({"kind":"echo","max_attempts":100})",
          R"({"kind":"echo","priority":100})", R"({"kind":"echo","priority":-100})"}) {
        BOOST_TEST_CONTEXT(body) {
            auto r = c.post_json("/operations", body);
            BOOST_TEST(r.status == 202, r.body);
        }
    }
}

BOOST_AUTO_TEST_CASE(sleep_input_failing_its_check_is_422) {
    http_client c(port());
    expect_rejected(
        c,
        {
            {"negative seconds", R"({"kind":"sleep","input":{"seconds":-1}})", 422,
             "invalid-input"},
            {"zero steps", R"({"kind":"sleep","input":{"steps":0}})", 422, "invalid-input"},
            {"seconds not a number", R"({"kind":"sleep","input":{"seconds":"x"}})", 422,
             "invalid-input"},
            {"seconds over 3600", R"({"kind":"sleep","input":{"seconds":3601}})", 422,
             "invalid-input"},
            {"steps over 1000", R"({"kind":"sleep","input":{"steps":1001}})", 422, "invalid-input"},
            {"input not an object", R"({"kind":"sleep","input":[1]})", 422, "invalid-input"},
        });
}

BOOST_AUTO_TEST_CASE(content_type_must_be_json) {
    http_client c(port());
    std::string const body = R"({"kind":"echo"})";
    BOOST_TEST_CONTEXT("no Content-Type") {
        expect_problem(c.request("POST", "/operations", body), 415, "unsupported-media-type",
                       "/operations");
    }
    for (std::string type : {"text/plain", "application/x-www-form-urlencoded", "text/json",
                             "application/merge-patch+json", "application/problem+json"}) {
        BOOST_TEST_CONTEXT("Content-Type: " << type) {
            expect_problem(c.post_json("/operations", body, {{"Content-Type", type}}), 415,
                           "unsupported-media-type", "/operations");
        }
    }
    for (std::string type : {"application/json; charset=utf-8", "Application/JSON"}) {
        BOOST_TEST_CONTEXT("Content-Type: " << type) {
            auto r = c.post_json("/operations", body, {{"Content-Type", type}});
            BOOST_TEST(r.status == 202, r.body);
        }
    }
}

BOOST_AUTO_TEST_CASE(invalid_idempotency_keys_are_400) {
    http_client c(port());
    std::string const body = R"({"kind":"echo","input":"idem"})";
    std::vector<std::pair<std::string, std::string>> keys = {
        {"empty", ""},
        {"256 characters", std::string(256, 'k')},
        {"contains a space", "abc def"},
        {"non-ASCII", "caf\xc3\xa9-key"},
        {"empty quoted string", "\"\""},
    };
    for (const auto& [what, key] : keys) {
        BOOST_TEST_CONTEXT(what) {
            expect_problem(c.post_json("/operations", body, {{"Idempotency-Key", key}}), 400,
                           "invalid-idempotency-key", "/operations");
        }
    }
    // The longest valid key is taken, so the 256-character rejection is the length limit.
    auto r = c.post_json("/operations", body, {{"Idempotency-Key", std::string(255, 'k')}});
    BOOST_TEST(r.status == 202, r.body);
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------------------------

BOOST_FIXTURE_TEST_SUITE(id_errors, server_still_up)

BOOST_AUTO_TEST_CASE(malformed_ids_are_404) {
    http_client c(port());
    struct call {
        std::string method;
        std::string target;
    };
    std::vector<call> calls = {
        {"GET", "/operations/not-a-ulid/status"},
        {"GET", "/operations/NOTAULID"},
        {"DELETE", "/operations/x"},
        {"POST", "/operations/x/cancel"},
        // 26 characters but not Crockford base32 (U is excluded), and one over the ULID range.
        {"GET", "/operations/01JDB6Q6X8Z3M9J1V7QJ4T2N5U/status"},
        {"GET", "/operations/81JDB6Q6X8Z3M9J1V7QJ4T2N5K"},
        {"GET", "/operations/01JDB6Q6X8Z3M9J1V7QJ4T2N5KX/status"},
    };
    for (const auto& k : calls) {
        BOOST_TEST_CONTEXT(k.method << " " << k.target) {
            expect_problem(c.request(k.method, k.target), 404, "not-found", k.target);
        }
    }
}

BOOST_AUTO_TEST_CASE(unknown_well_formed_ids_are_404) {
    http_client c(port());
    std::string const id(unknown_id);
    struct call {
        std::string method;
        std::string target;
    };
    std::vector<call> calls = {
        {"GET", "/operations/" + id + "/status"},
        {"GET", "/operations/" + id + "/status?wait=1"},
        {"GET", "/operations/" + id},
        {"DELETE", "/operations/" + id},
        {"POST", "/operations/" + id + "/cancel"},
    };
    for (const auto& k : calls) {
        BOOST_TEST_CONTEXT(k.method << " " << k.target) {
            auto r = c.request(k.method, k.target);
            expect_problem(r, 404, "not-found", k.target.substr(0, k.target.find('?')));
            BOOST_TEST(detail_of(r.json().as_object()).find(id) != std::string::npos, r.body);
            // The status monitor's answers, errors too, depend on Accept.
            if (k.target.find("/status") != std::string::npos)
                BOOST_TEST(r.header("Vary") == "Accept");
        }
    }
}

BOOST_AUTO_TEST_CASE(event_stream_of_unknown_or_malformed_id_is_404) {
    http_client c(port());
    for (std::string id : {std::string(unknown_id), std::string("not-a-ulid")}) {
        BOOST_TEST_CONTEXT(id) {
            auto target = "/operations/" + id + "/status";
            auto r = c.get(target, {{"Accept", "text/event-stream"}});
            expect_problem(r, 404, "not-found", target);
            BOOST_TEST(r.header("Vary") == "Accept");
        }
    }
}

BOOST_AUTO_TEST_CASE(path_traversal_ids_are_404) {
    http_client c(port());
    struct call {
        std::string method;
        std::string target;
    };
    std::vector<call> calls = {
        {"GET", "/operations/..%2F..%2Fetc%2Fpasswd"},
        {"DELETE", "/operations/..%2F..%2Fetc%2Fpasswd"},
        {"GET", "/operations/..%2F..%2Fetc%2Fpasswd/status"},
        {"GET", "/operations/%2E%2E/status"},
        {"GET", "/operations/.."},
        {"DELETE", "/operations/.."},
        {"POST", "/operations/.%2E/cancel"},
        {"GET", "/operations/../../etc/passwd"},
        {"GET", "/operations/..%5C..%5Cbuzzer.db"},
    };
    for (const auto& k : calls) {
        BOOST_TEST_CONTEXT(k.method << " " << k.target) {
            expect_problem(c.request(k.method, k.target), 404, "not-found", k.target);
        }
    }
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------------------------

BOOST_FIXTURE_TEST_SUITE(route_errors, server_still_up)

BOOST_AUTO_TEST_CASE(unknown_path_is_404) {
    http_client c(port());
    for (const std::string& target : std::vector<std::string>{
             "/nope", "/operations/" + std::string(unknown_id) + "/status/extra", "/kinds/sleep",
             "/operationsX"}) {
        BOOST_TEST_CONTEXT(target) { expect_problem(c.get(target), 404, "not-found", target); }
    }
}

BOOST_AUTO_TEST_CASE(put_on_the_collection_is_405_with_allow) {
    http_client c(port());
    auto r = c.request("PUT", "/operations", R"({"kind":"echo"})",
                       {{"Content-Type", "application/json"}});
    expect_problem(r, 405, "method-not-allowed", "/operations");
    auto allow = r.header("Allow");
    BOOST_TEST(allow.find("GET") != std::string::npos, "Allow: " << allow);
    BOOST_TEST(allow.find("POST") != std::string::npos, "Allow: " << allow);
    BOOST_TEST(allow.find("PUT") == std::string::npos, "Allow: " << allow);
}

BOOST_AUTO_TEST_CASE(patch_on_an_operation_is_405_with_allow) {
    http_client c(port());
    auto target = "/operations/" + std::string(unknown_id);
    auto r = c.request("PATCH", target, "{}", {{"Content-Type", "application/json"}});
    expect_problem(r, 405, "method-not-allowed", target);
    auto allow = r.header("Allow");
    BOOST_TEST(allow.find("GET") != std::string::npos, "Allow: " << allow);
    BOOST_TEST(allow.find("DELETE") != std::string::npos, "Allow: " << allow);
    BOOST_TEST(allow.find("PATCH") == std::string::npos, "Allow: " << allow);
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------------------------

BOOST_FIXTURE_TEST_SUITE(query_errors, server_still_up)

BOOST_AUTO_TEST_CASE(bad_list_parameters_are_400) {
    http_client c(port());
    for (std::string query :
         {"limit=0", "limit=501", "limit=abc", "limit=-1", "limit=", "limit=1.5", "status=bogus",
          "status=running&status=bogus", "before=not-an-id"}) {
        BOOST_TEST_CONTEXT(query) {
            expect_problem(c.get("/operations?" + query), 400, "invalid-query", "/operations");
        }
    }
}

BOOST_AUTO_TEST_CASE(list_limits_in_range_are_200) {
    http_client c(port());
    for (std::string query : {"limit=500", "limit=1", "status=pending&status=succeeded"}) {
        BOOST_TEST_CONTEXT(query) {
            auto r = c.get("/operations?" + query);
            BOOST_TEST(r.status == 200, r.body.substr(0, 300));
            BOOST_TEST(r.json().as_object().at("operations").is_array());
        }
    }
}

BOOST_AUTO_TEST_CASE(unparsable_wait_is_400) {
    http_client c(port());
    auto id = submit(c, R"({"kind":"echo","input":"wait"})");
    auto target = "/operations/" + id + "/status";
    for (std::string query : {"wait=abc", "wait=", "wait=1x"}) {
        BOOST_TEST_CONTEXT(query) {
            expect_problem(c.get(target + "?" + query), 400, "invalid-query", target);
        }
    }
    // Out-of-range numbers are clamped, not rejected, however many digits they have.
    for (std::string query :
         {"wait=-1", "wait=-99999999999999999999", "wait=99999999999999999999"}) {
        BOOST_TEST_CONTEXT(query) {
            auto r = c.get(target + "?" + query);
            BOOST_TEST((r.status == 200 || r.status == 303), r.body);
        }
    }
}

BOOST_AUTO_TEST_CASE(events_without_operations_is_400) {
    http_client c(port());
    for (const std::string& target :
         std::vector<std::string>{"/events", "/events?", "/events?op=" + std::string(unknown_id)}) {
        BOOST_TEST_CONTEXT(target) {
            auto r = c.get(target, {{"Accept", "text/event-stream"}});
            expect_problem(r, 400, "invalid-query", "/events");
        }
    }
}

BOOST_AUTO_TEST_CASE(events_with_101_operations_is_400_and_100_are_served) {
    http_client c(port());
    std::string query;
    for (int i = 0; i < 101; ++i) {
        auto id = submit(c, R"({"kind":"echo","input":)" + std::to_string(i) + "}");
        if (i == 100) {
            // Exactly 100 existing operations: the stream opens.
            sse_stream s(port(), "/events?" + query);
            BOOST_TEST(s.status() == 200, s.head().body);
            BOOST_TEST(s.header("Content-Type").starts_with("text/event-stream"));
        }
        query += (i ? "&" : "") + std::string("operation=") + id;
    }
    auto r = c.get("/events?" + query, {{"Accept", "text/event-stream"}});
    expect_problem(r, 400, "invalid-query", "/events");
    // 101 times the same id is 101 ids too.
    auto id = submit(c, R"({"kind":"echo"})");
    std::string same;
    for (int i = 0; i < 101; ++i) same += (i ? "&" : "") + std::string("operation=") + id;
    expect_problem(c.get("/events?" + same, {{"Accept", "text/event-stream"}}), 400,
                   "invalid-query", "/events");
}

BOOST_AUTO_TEST_CASE(events_with_an_unknown_operation_is_404_naming_it) {
    http_client c(port());
    auto known = submit(c, R"({"kind":"echo","input":"known"})");
    std::string const unknown(unknown_id);
    for (const std::string& query : std::vector<std::string>{
             "operation=" + unknown, "operation=" + known + "&operation=" + unknown,
             "operation=" + known + "&operation=not-a-ulid"}) {
        BOOST_TEST_CONTEXT(query) {
            auto r = c.get("/events?" + query, {{"Accept", "text/event-stream"}});
            expect_problem(r, 404, "not-found", "/events");
            auto named = query.substr(query.rfind('=') + 1);
            BOOST_TEST(detail_of(r.json().as_object()).find(named) != std::string::npos, r.body);
        }
    }
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------------------------

BOOST_FIXTURE_TEST_SUITE(body_limit, server_still_up)

BOOST_AUTO_TEST_CASE(body_just_under_the_limit_is_accepted) {
    // The limit is 1 MiB, not less: a body of exactly 1 MiB is taken, with Content-Length and
    // chunked.
    http_client c(port());
    std::string body = echo_body_of_size(mib);
    BOOST_TEST_CONTEXT("Content-Length") {
        auto r = c.post_json("/operations", body);
        BOOST_TEST(r.status == 202, r.body.substr(0, 300));
    }
    BOOST_TEST_CONTEXT("chunked") {
        auto r = c.post_json("/operations", body, {{"Transfer-Encoding", "chunked"}});
        BOOST_TEST(r.status == 202, r.body.substr(0, 300));
    }
}

BOOST_AUTO_TEST_CASE(expect_100_continue_gets_its_interim_response_before_the_body) {
    // As curl sends larger bodies: the head first, the body only after "100 Continue".
    const std::string body = R"({"kind":"echo","input":"after the interim response"})";
    raw_connection c(port());
    BOOST_TEST_REQUIRE(!c.send(
        post_head("Expect: 100-continue\r\nContent-Length: " + std::to_string(body.size()))));
    // What arrives until `marker` is among it or the server closes.
    auto receive_through = [&](std::string_view marker) {
        std::string got;
        BOOST_TEST_REQUIRE(wait_until(
            [&] {
                got += c.receive(200ms);
                return got.find(marker) != std::string::npos || c.closed();
            },
            10s));
        return got;
    };
    auto interim = receive_through("\r\n\r\n");
    BOOST_TEST_REQUIRE(interim.starts_with("HTTP/1.1 100 Continue\r\n"), interim);
    BOOST_TEST_REQUIRE(!c.send(body));
    auto reply = receive_through("\"status\":\"pending\"");
    BOOST_TEST(reply.starts_with("HTTP/1.1 202 Accepted\r\n"), reply);
}

BOOST_AUTO_TEST_CASE(body_over_the_limit_with_content_length_is_413) {
    std::string body = echo_body_of_size(mib + 1);
    auto a = exchange_and_close(post_head("Content-Length: " + std::to_string(body.size())) + body);
    BOOST_TEST_REQUIRE(a.reply.has_value(), "no response; received: " << a.raw.substr(0, 300));
    expect_problem(*a.reply, 413, "payload-too-large", "/operations");
    BOOST_TEST(a.closed, "the connection stayed open after the 413");
    expect_healthy(port());
}

BOOST_AUTO_TEST_CASE(body_over_the_limit_chunked_is_413) {
    std::string body = echo_body_of_size(mib + 64 * 1024);
    std::string request = post_head("Transfer-Encoding: chunked");
    constexpr std::size_t piece = 16 * 1024;
    for (std::size_t at = 0; at < body.size(); at += piece) {
        auto part = body.substr(at, piece);
        char size[16];
        std::snprintf(size, sizeof size, "%zx\r\n", part.size());
        request += size + part + "\r\n";
    }
    request += "0\r\n\r\n";
    auto a = exchange_and_close(request);
    BOOST_TEST_REQUIRE(a.reply.has_value(), "no response; received: " << a.raw.substr(0, 300));
    expect_problem(*a.reply, 413, "payload-too-large", "/operations");
    BOOST_TEST(a.closed, "the connection stayed open after the 413");
    expect_healthy(port());
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------------------------

BOOST_FIXTURE_TEST_SUITE(protocol_abuse, server_still_up)

BOOST_AUTO_TEST_CASE(garbage_bytes_get_400_and_a_close) {
    std::vector<std::pair<std::string, std::string>> requests = {
        {"binary garbage", "\x00\x01 hello\r\n\r\n"s},
        {"no version", "GET /healthz\r\n\r\n"s},
        {"header without colon", "GET /healthz HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n"s},
        {"bad Content-Length",
         "POST /operations HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n"s},
        {"two Content-Lengths",
         "POST /operations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
         "Content-Length: 2\r\nContent-Length: 15\r\n\r\n{\"kind\":\"echo\"}"s},
        {"bad chunk size", post_head("Transfer-Encoding: chunked") + "zz\r\n{}\r\n0\r\n\r\n"},
        {"control character in a field",
         "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01"
         "b\r\n\r\n"s},
    };
    for (const auto& [what, bytes] : requests) {
        BOOST_TEST_CONTEXT(what) {
            auto a = exchange_and_close(bytes);
            BOOST_TEST(a.closed, "no close within the deadline (" << a.took.count() << " ms)");
            BOOST_TEST_REQUIRE(a.reply.has_value(),
                               "no response; received: " << a.raw.substr(0, 300));
            BOOST_TEST(a.reply->status == 400, a.raw.substr(0, 300));
            BOOST_TEST(a.reply->header("Content-Type").starts_with("application/problem+json"));
        }
    }
    expect_healthy(port());
}

BOOST_AUTO_TEST_CASE(header_block_over_16_kib_is_431) {
    std::string many = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    for (int i = 0; i < 20; ++i)
        many += "X-Pad-" + std::to_string(i) + ": " + std::string(1000, 'p') + "\r\n";
    many += "\r\n";
    std::string one_line =
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + std::string(17 * 1024, 'b') +
        "\r\n\r\n";
    for (const auto& [what, bytes] : std::vector<std::pair<std::string, std::string>>{
             {"20 fields of 1000 bytes", many}, {"one 17 KiB field", one_line}}) {
        BOOST_TEST_CONTEXT(what) {
            auto a = exchange_and_close(bytes);
            BOOST_TEST_REQUIRE(a.reply.has_value(),
                               "no response; received: " << a.raw.substr(0, 300));
            expect_problem(*a.reply, 431, "header-too-large");
            BOOST_TEST(a.closed, "the connection stayed open after the 431");
        }
    }
    // Below the limit the same kind of request is served.
    http_client c(port());
    auto r = c.get("/healthz", {{"X-Pad", std::string(8 * 1024, 'p')}});
    BOOST_TEST(r.status == 200);
}

BOOST_AUTO_TEST_CASE(client_vanishing_mid_body_leaves_the_server_healthy) {
    for (int i = 0; i < 5; ++i) {
        raw_connection c(port());
        BOOST_TEST(!c.send(post_head("Content-Length: 1000") + R"({"kind":")"));
        c.close();
    }
    expect_healthy(port());
    // And after a half-close mid-body (the server sees end of stream, not a reset).
    raw_connection c(port());
    BOOST_TEST(!c.send(post_head("Content-Length: 1000") + R"({"kind":")"));
    c.shutdown_send();
    c.receive_until_close(10s);
    BOOST_TEST(c.closed(), "the server kept a half-closed, incomplete request open");
    expect_healthy(port());
}

BOOST_AUTO_TEST_CASE(pipelined_requests_are_answered_in_order_on_one_connection) {
    raw_connection c(port());
    std::string const get = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    BOOST_TEST_REQUIRE(!c.send(get + get + "GET /kinds HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
    auto replies = read_responses(c, 3, 10s);
    BOOST_TEST_REQUIRE(replies.size() == 3u);
    for (int i = 0; i < 2; ++i) {
        BOOST_TEST(replies[i].status == 200);
        BOOST_TEST(replies[i].json().as_object().at("status").as_string() == "ok");
    }
    BOOST_TEST(replies[2].status == 200);
    const auto& kinds = replies[2].json().as_object().at("kinds").as_array();
    BOOST_TEST(!kinds.empty());
    // Still the same, open connection: a fourth request is answered on it.
    BOOST_TEST(!c.closed());
    BOOST_TEST_REQUIRE(!c.send(get));
    auto fourth = read_responses(c, 1, 10s);
    BOOST_TEST_REQUIRE(fourth.size() == 1u);
    BOOST_TEST(fourth[0].status == 200);
}

BOOST_AUTO_TEST_CASE(http_1_0_request_is_answered) {
    auto a = exchange_and_close("GET /healthz HTTP/1.0\r\n\r\n");
    BOOST_TEST_REQUIRE(a.reply.has_value(), "no response; received: " << a.raw.substr(0, 300));
    BOOST_TEST(a.reply->status == 200);
    BOOST_TEST(a.reply->json().as_object().at("status").as_string() == "ok");
    // Without keep-alive an HTTP/1.0 connection ends with the response.
    BOOST_TEST(a.closed);
}

BOOST_AUTO_TEST_CASE(absolute_form_targets_are_served_like_their_path) {
    for (std::string target : {"http://127.0.0.1/healthz", "HTTPS://api.example.com/healthz?x=1"}) {
        BOOST_TEST_CONTEXT(target) {
            auto a = exchange_and_close("GET " + target +
                                        " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: "
                                        "close\r\n\r\n");
            BOOST_TEST_REQUIRE(a.reply.has_value(), "no response: " << a.raw.substr(0, 300));
            BOOST_TEST(a.reply->status == 200);
        }
    }
}

BOOST_AUTO_TEST_CASE(status_lines_use_the_current_reason_phrases) {
    auto a = exchange_and_close(
        "POST /operations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Content-Length: 15\r\nConnection: close\r\n\r\n{\"kind\":\"nope\"}");
    BOOST_TEST(a.raw.starts_with("HTTP/1.1 422 Unprocessable Content\r\n"), a.raw.substr(0, 60));
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------------------------

BOOST_FIXTURE_TEST_SUITE(slow_clients, server_still_up)

// The connection, whose last bytes were sent at `start`, gets a 408 problem after the 1 s
// timeout under test, and is closed.
void expect_timed_out(raw_connection& c, steady::time_point start) {
    auto got = c.receive_until_close(10s);
    auto const took = ms_since(start);
    BOOST_TEST(c.closed(), "still open after 10 s");
    BOOST_TEST(took < 5000);
    BOOST_TEST(took >= 800, "closed before the timeout");
    BOOST_TEST(got.starts_with("HTTP/1.1 408 Request Timeout\r\n"), got);
    BOOST_TEST(got.find("/problems/request-timeout") != std::string::npos, got);
}

BOOST_AUTO_TEST_CASE(half_a_request_line_is_closed_after_the_header_timeout) {
    // The idle timeout stays at its default (60 s): only the header timeout can close it early.
    server_process slow{server_options{.args = {"--header-timeout", "1"}}};
    raw_connection c(slow.port());
    auto const start = steady::now();
    BOOST_TEST_REQUIRE(!c.send("GET /heal"));
    expect_timed_out(c, start);
    expect_healthy(slow.port());
}

BOOST_AUTO_TEST_CASE(headers_dribbled_line_by_line_are_closed_after_the_header_timeout) {
    // A slowloris client: each line arrives in time, but the whole head never does.
    server_process slow{server_options{.args = {"--header-timeout", "1"}}};
    raw_connection c(slow.port());
    auto const start = steady::now();
    (void)c.send("GET /healthz HTTP/1.1\r\n");
    for (int i = 0; !c.closed() && steady::now() - start < 10s; ++i) {
        // receive() paces the dribble: it returns after 200 ms, or at once when the server talks.
        auto got = c.receive(200ms);
        if (!got.empty() || c.closed()) break;
        (void)c.send("X-Slow-" + std::to_string(i) + ": 1\r\n");
    }
    c.receive_until_close(2s);
    auto const took = ms_since(start);
    BOOST_TEST(c.closed());
    BOOST_TEST(took < 4000);
    expect_healthy(slow.port());
}

BOOST_AUTO_TEST_CASE(a_body_that_stalls_gets_a_408_after_the_idle_timeout) {
    // The header timeout stays at its default (10 s): the body's read has the idle timeout.
    server_process slow{server_options{.args = {"--idle-timeout", "1"}}};
    raw_connection c(slow.port());
    auto const start = steady::now();
    BOOST_TEST_REQUIRE(
        !c.send("POST /operations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                "Content-Length: 100\r\n\r\n{\"kind\":\""));
    expect_timed_out(c, start);
    expect_healthy(slow.port());
}

BOOST_AUTO_TEST_CASE(a_connection_that_never_sends_is_closed_after_the_header_timeout) {
    // The idle timeout stays at its default (60 s): it is for kept-alive connections.
    server_process slow{server_options{.args = {"--header-timeout", "1"}}};
    raw_connection c(slow.port());
    auto const start = steady::now();
    auto got = c.receive_until_close(10s);
    auto const took = ms_since(start);
    BOOST_TEST(c.closed(), "still open after 10 s");
    BOOST_TEST(took < 5000);
    BOOST_TEST(took >= 800, "closed before the header timeout");
    // Nothing was asked: nothing is answered.
    BOOST_TEST(got.empty(), got);
    expect_healthy(slow.port());
}

BOOST_AUTO_TEST_CASE(silent_connection_is_closed_after_the_idle_timeout) {
    server_process idle{server_options{.args = {"--idle-timeout", "1"}}};
    {
        raw_connection c(idle.port());
        auto const start = steady::now();
        c.receive_until_close(10s);
        auto const took = ms_since(start);
        BOOST_TEST(c.closed(), "still open after 10 s");
        BOOST_TEST(took < 5000);
        BOOST_TEST(took >= 800, "closed before the idle timeout");
    }
    {
        // The same after a served request on a kept-alive connection.
        raw_connection c(idle.port());
        BOOST_TEST_REQUIRE(!c.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
        auto replies = read_responses(c, 1, 10s);
        BOOST_TEST_REQUIRE(replies.size() == 1u);
        BOOST_TEST(replies[0].status == 200);
        auto const start = steady::now();
        c.receive_until_close(10s);
        BOOST_TEST(c.closed(), "kept-alive connection still open after 10 s idle");
        BOOST_TEST(ms_since(start) < 5000);
    }
    expect_healthy(idle.port());
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------------------------

BOOST_FIXTURE_TEST_SUITE(service, server_still_up)

BOOST_AUTO_TEST_CASE(metrics_are_served_as_prometheus_text) {
    http_client c(port());
    auto m = c.get("/metrics");
    BOOST_TEST(m.status == 200);
    BOOST_TEST(m.header("Content-Type").starts_with("text/plain"), m.header("Content-Type"));
    BOOST_TEST(m.body.find("# TYPE ") != std::string::npos, m.body.substr(0, 300));
}

BOOST_AUTO_TEST_SUITE_END()
