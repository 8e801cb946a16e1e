// Access control against the real server: API keys, JWTs, roles, tenants, the session cookie,
// quotas, the failure limit, CORS and revocation.
#define BOOST_TEST_MODULE integration_access
#include <boost/test/unit_test.hpp>
#include <chrono>
#include <csignal>
#include <optional>
#include <thread>

#include "auth/base64url.hpp"
#include "common.hpp"
#include "support/jwt_sign.hpp"
#include "support/sse_client.hpp"

namespace json = boost::json;
using namespace buzzer::test;
using namespace std::chrono_literals;

namespace {

const std::string issuer = "https://login.example.test/";

std::int64_t now_s() {
    return std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// `buzzer keys create` on `database`; returns {key, id}.
std::pair<std::string, std::string> make_key(const std::filesystem::path& database,
                                             const std::string& tenant, const std::string& role,
                                             std::vector<std::string> extra = {}) {
    std::vector<std::string> args{"keys",     "create", "--database", database.string(),
                                  "--tenant", tenant,   "--role",     role};
    args.insert(args.end(), extra.begin(), extra.end());
    auto r = run_buzzer(args);
    BOOST_TEST_REQUIRE(r.exit_code == 0, "keys create: " << r.err);
    auto nl = r.out.find('\n');
    auto key = r.out.substr(0, nl);
    auto id = r.out.substr(nl + 1, r.out.find('\n', nl + 1) - nl - 1);
    BOOST_TEST_REQUIRE(key.starts_with("bzk_"));
    BOOST_TEST_REQUIRE(key.size() >= 40u);
    BOOST_TEST_REQUIRE(!id.empty());
    return {key, id};
}

headers bearer(const std::string& credential) {
    return {{"Authorization", "Bearer " + credential}};
}

// A server with API keys and JWTs (ES256 "k1", RS256 "r1", HS256 "h1"), two tenants' keys and
// a CORS policy.
struct protected_server {
    temp_dir dir{"buzzer-access-"};
    std::filesystem::path database = (dir / "buzzer.db");
    key_pair es = make_key_pair("P-256");
    key_pair rs = make_key_pair("RSA-2048");
    std::string hs_secret = "0123456789abcdef0123456789abcdef";
    std::string admin, writer, reader, other_writer, echo_writer;
    std::optional<server_process> server;

    protected_server() {
        auto es_pem = dir.write_file("es.pem", es.public_pem);
        auto rs_pem = dir.write_file("rs.pem", rs.public_pem);
        auto hs = dir.write_file("hs.secret", hs_secret);
        auto config = dir.write_file("buzzer.json", R"({
            "auth": {"jwt": {"issuer": ")" + issuer + R"(", "audience": "buzzer",
                "keys": [{"kid": "k1", "alg": "ES256", "pem_file": ")" +
                                                        es_pem.string() + R"("},
                         {"kid": "r1", "alg": "RS256", "pem_file": ")" +
                                                        rs_pem.string() + R"("},
                         {"kid": "h1", "alg": "HS256", "secret_file": ")" +
                                                        hs.string() + R"("}]},
                "metrics_token": "scraper-token-0123456789", "failure_limit": 100000},
            "cors": {"origins": ["http://app.example.test"], "credentials": true, "max_age_s": 300}
        })");
        admin = make_key(database, "acme", "admin").first;
        writer = make_key(database, "acme", "write").first;
        reader = make_key(database, "acme", "read").first;
        other_writer = make_key(database, "globex", "write").first;
        echo_writer = make_key(database, "acme", "write", {"--kinds", "echo"}).first;
        server.emplace(server_options{.database = database, .args = {"--config", config.string()}});
    }

    unsigned short port() const { return server->port(); }

    std::string token(const json::object& claims, std::string alg = "ES256",
                      std::string kid = "k1") const {
        json::object header{{"alg", alg}, {"typ", "JWT"}};
        if (!kid.empty()) header["kid"] = kid;
        const auto& key = alg.starts_with("HS")   ? hs_secret
                          : alg.starts_with("RS") ? rs.private_pem
                                                  : es.private_pem;
        return sign_jwt(json::serialize(header), json::serialize(claims),
                        *buzzer::auth::parse_jwt_alg(alg), key);
    }

    json::object claims(std::string tenant = "acme", std::string scope = "buzzer:write") const {
        return {{"iss", issuer},  {"aud", "buzzer"},      {"sub", "user-1"},    {"tenant", tenant},
                {"scope", scope}, {"exp", now_s() + 600}, {"iat", now_s() - 10}};
    }
};

protected_server& fixture() {
    static protected_server s;
    return s;
}

std::string submit_as(http_client& c, const std::string& credential, const std::string& body,
                      headers extra = {}) {
    auto h = bearer(credential);
    h.insert(h.end(), extra.begin(), extra.end());
    return submit(c, body, h);
}

// Waits until operation `id` has `status`, reading it with `credential`.
void wait_as(http_client& c, const std::string& credential, const std::string& id,
             std::string_view status) {
    std::string last;
    bool ok = wait_until(
        [&] {
            auto r = c.get("/operations/" + id + "/status", bearer(credential));
            last = r.body;
            return r.body.find("\"status\":\"" + std::string(status) + "\"") != std::string::npos;
        },
        20s);
    BOOST_TEST_REQUIRE(ok, "operation " << id << " did not become " << status << ": " << last);
}

}  // namespace

BOOST_AUTO_TEST_CASE(every_route_without_a_credential_is_401_with_a_challenge) {
    auto& s = fixture();
    http_client c(s.port());
    const std::string id = "01J00000000000000000000000";
    const std::vector<std::pair<std::string, std::string>> routes{
        {"GET", "/operations"},
        {"POST", "/operations"},
        {"GET", "/operations/" + id + "/status"},
        {"GET", "/operations/" + id},
        {"DELETE", "/operations/" + id},
        {"POST", "/operations/" + id + "/cancel"},
        {"GET", "/events?operation=" + id},
        {"GET", "/kinds"},
        {"GET", "/metrics"},
        {"POST", "/keys"},
        {"GET", "/keys"},
        {"DELETE", "/keys/key_x"},
        {"POST", "/session"}};
    for (const auto& [method, target] : routes) {
        auto r = c.request(method, target, method == "POST" ? "{}" : "",
                           {{"Content-Type", "application/json"}});
        BOOST_TEST(r.status == 401, method << " " << target << " -> " << r.status);
        BOOST_TEST(r.header("WWW-Authenticate") == R"(Bearer realm="buzzer")",
                   method << " " << target);
        BOOST_TEST(r.header("Content-Type") == "application/problem+json");
        BOOST_TEST(std::string(r.json().at("type").as_string()).ends_with("/unauthorized"));
        auto bad =
            c.request(method, target, "", bearer("bzk_0000000000000000000000000000000000000000"));
        BOOST_TEST(bad.status == 401, method << " " << target);
        BOOST_TEST(bad.header("WWW-Authenticate") ==
                   R"(Bearer realm="buzzer", error="invalid_token")");
    }
    for (const auto* open : {"/", "/healthz", "/readyz"})
        BOOST_TEST(c.get(open).status == 200, open);
}

BOOST_AUTO_TEST_CASE(roles_allow_what_the_contract_says) {
    auto& s = fixture();
    http_client c(s.port());
    auto id = submit_as(c, s.writer, R"({"kind":"echo","input":1})");
    wait_as(c, s.writer, id, "succeeded");
    // read: status, result, list, streams, kinds; not submit, cancel, delete, keys, metrics.
    auto r = bearer(s.reader);
    BOOST_TEST(c.get("/operations/" + id + "/status", r).status == 303);
    BOOST_TEST(c.get("/operations/" + id, r).status == 200);
    BOOST_TEST(c.get("/operations", r).status == 200);
    BOOST_TEST(c.get("/kinds", r).status == 200);
    auto refused = c.post_json("/operations", R"({"kind":"echo"})", r);
    BOOST_TEST(refused.status == 403);
    BOOST_TEST(std::string(refused.json().at("type").as_string()).ends_with("/forbidden"));
    BOOST_TEST(c.request("POST", "/operations/" + id + "/cancel", "", r).status == 403);
    BOOST_TEST(c.del("/operations/" + id, r).status == 403);
    BOOST_TEST(c.get("/keys", r).status == 403);
    BOOST_TEST(c.get("/metrics", r).status == 403);
    // write: everything of operations, not keys or metrics.
    auto w = bearer(s.writer);
    BOOST_TEST(c.get("/keys", w).status == 403);
    BOOST_TEST(c.get("/metrics", w).status == 403);
    BOOST_TEST(c.del("/operations/" + id, w).status == 204);
    // admin: keys and metrics; the scraper's token: metrics only.
    auto a = bearer(s.admin);
    BOOST_TEST(c.get("/keys", a).status == 200);
    BOOST_TEST(c.get("/metrics", a).status == 200);
    BOOST_TEST(c.get("/metrics", bearer("scraper-token-0123456789")).status == 200);
    BOOST_TEST(c.get("/operations", bearer("scraper-token-0123456789")).status == 401);
}

BOOST_AUTO_TEST_CASE(a_key_limited_to_kinds_submits_only_those) {
    auto& s = fixture();
    http_client c(s.port());
    auto e = bearer(s.echo_writer);
    BOOST_TEST(c.post_json("/operations", R"({"kind":"sleep","input":{"seconds":0}})", e).status ==
               403);
    auto id = submit_as(c, s.echo_writer, R"({"kind":"echo"})");
    auto other = submit_as(c, s.writer, R"({"kind":"sleep","input":{"seconds":0}})");
    BOOST_TEST(c.get("/operations/" + other + "/status", e).status / 100 != 4);
    wait_as(c, s.writer, id, "succeeded");
}

BOOST_AUTO_TEST_CASE(another_tenants_operations_are_unknown_everywhere) {
    auto& s = fixture();
    http_client c(s.port());
    auto mine = submit_as(c, s.writer, R"({"kind":"sleep","input":{"seconds":30}})");
    auto g = bearer(s.other_writer);
    BOOST_TEST(c.get("/operations/" + mine + "/status", g).status == 404);
    BOOST_TEST(c.get("/operations/" + mine, g).status == 404);
    BOOST_TEST(c.request("POST", "/operations/" + mine + "/cancel", "", g).status == 404);
    BOOST_TEST(c.del("/operations/" + mine, g).status == 404);
    auto ev = c.get("/events?operation=" + mine, g);
    BOOST_TEST(ev.status == 404);
    BOOST_TEST(ev.body.find(mine) != std::string::npos);
    auto sse =
        c.get("/operations/" + mine + "/status",
              {{"Authorization", "Bearer " + s.other_writer}, {"Accept", "text/event-stream"}});
    BOOST_TEST(sse.status == 404);
    auto list = c.get("/operations?limit=100", g);
    BOOST_TEST(list.body.find(mine) == std::string::npos);
    // The same idempotency key in two tenants makes two operations.
    headers key{{"Idempotency-Key", "shared-key-1"}};
    auto a = submit_as(c, s.writer, R"({"kind":"echo"})", key);
    auto b = submit_as(c, s.other_writer, R"({"kind":"echo"})", key);
    BOOST_TEST(a != b);
    BOOST_TEST(submit_as(c, s.writer, R"({"kind":"echo"})", key) == a);
    BOOST_TEST(c.request("POST", "/operations/" + mine + "/cancel", "", bearer(s.writer)).status ==
               202);
}

BOOST_AUTO_TEST_CASE(valid_tokens_of_each_family_are_accepted) {
    auto& s = fixture();
    http_client c(s.port());
    for (auto [alg, kid] : {std::pair{"ES256", "k1"}, {"RS256", "r1"}, {"HS256", "h1"}}) {
        auto t = s.token(s.claims(), alg, kid);
        auto id = submit_as(c, t, R"({"kind":"echo"})");
        BOOST_TEST(c.get("/operations/" + id + "/status", bearer(t)).status / 100 != 4, alg);
        // The tenant is the token's: another tenant's key does not see it.
        BOOST_TEST(c.get("/operations/" + id + "/status", bearer(s.other_writer)).status == 404);
    }
    auto no_role = s.token(s.claims("acme", "openid profile"));
    BOOST_TEST(c.get("/operations", bearer(no_role)).status == 403);
    auto read_only = s.token(s.claims("acme", "openid buzzer:read"));
    BOOST_TEST(c.get("/operations", bearer(read_only)).status == 200);
    BOOST_TEST(c.post_json("/operations", R"({"kind":"echo"})", bearer(read_only)).status == 403);
}

BOOST_AUTO_TEST_CASE(forged_and_invalid_tokens_are_401) {
    auto& s = fixture();
    http_client c(s.port());
    auto good = s.token(s.claims());
    auto dot1 = good.find('.'), dot2 = good.rfind('.');
    std::vector<std::pair<std::string, std::string>> bad;
    // alg none, with and without a signature.
    auto none_header = buzzer::auth::base64url_encode(R"({"alg":"none","kid":"k1"})");
    auto payload = good.substr(dot1 + 1, dot2 - dot1 - 1);
    bad.emplace_back("alg none", none_header + "." + payload + ".");
    // HS256 with the ES public key as the secret, under the ES key's kid.
    bad.emplace_back("HS256 with the public key",
                     sign_jwt(R"({"alg":"HS256","kid":"k1"})", json::serialize(s.claims()),
                              buzzer::auth::jwt_alg::hs256, s.es.public_pem));
    bad.emplace_back("HS256 with the RSA public key",
                     sign_jwt(R"({"alg":"HS256","kid":"r1"})", json::serialize(s.claims()),
                              buzzer::auth::jwt_alg::hs256, s.rs.public_pem));
    bad.emplace_back("RS256 token under the ES key's kid",
                     sign_jwt(R"({"alg":"RS256","kid":"k1"})", json::serialize(s.claims()),
                              buzzer::auth::jwt_alg::rs256, s.rs.private_pem));
    // A changed payload under the old signature.
    auto changed = s.claims("globex");
    bad.emplace_back("changed payload",
                     good.substr(0, dot1 + 1) +
                         buzzer::auth::base64url_encode(json::serialize(changed)) +
                         good.substr(dot2));
    auto expired = s.claims();
    expired["exp"] = now_s() - 3600;
    bad.emplace_back("expired", s.token(expired));
    auto early = s.claims();
    early["nbf"] = now_s() + 3600;
    bad.emplace_back("not yet valid", s.token(early));
    auto iss = s.claims();
    iss["iss"] = "https://evil.example.test/";
    bad.emplace_back("wrong iss", s.token(iss));
    auto aud = s.claims();
    aud["aud"] = json::array{"other", "service"};
    bad.emplace_back("wrong aud", s.token(aud));
    bad.emplace_back("unknown kid", s.token(s.claims(), "ES256", "k9"));
    auto big = s.claims();
    big["pad"] = std::string(9000, 'x');
    bad.emplace_back("over 8 KiB", s.token(big));
    bad.emplace_back("not base64", "eyJ!!!.eyJ***.abc$");
    auto no_tenant = s.claims();
    no_tenant.erase("tenant");
    bad.emplace_back("no tenant", s.token(no_tenant));
    for (const auto& [what, token] : bad) {
        auto r = c.get("/operations", bearer(token));
        BOOST_TEST(r.status == 401, what << " -> " << r.status);
        BOOST_TEST(r.header("WWW-Authenticate").find("invalid_token") != std::string::npos, what);
    }
}

BOOST_AUTO_TEST_CASE(a_revoked_key_is_refused_from_the_next_request_on) {
    auto& s = fixture();
    http_client c(s.port());
    auto made = c.post_json("/keys", R"({"role":"write","name":"ci","expires_in_s":3600})",
                            bearer(s.admin));
    BOOST_TEST_REQUIRE(made.status == 201, made.body);
    auto key = std::string(made.json().at("key").as_string());
    auto id = std::string(made.json().at("id").as_string());
    BOOST_TEST(made.json().at("tenant").as_string() == "acme");
    BOOST_TEST(c.get("/operations", bearer(key)).status == 200);
    auto listed = c.get("/keys", bearer(s.admin));
    BOOST_TEST(listed.body.find(id) != std::string::npos);
    BOOST_TEST(listed.body.find(key) == std::string::npos);
    // Another tenant's admin cannot see or revoke it.
    auto globex_admin = make_key(s.database, "globex", "admin").first;
    BOOST_TEST(c.get("/keys", bearer(globex_admin)).body.find(id) == std::string::npos);
    BOOST_TEST(c.del("/keys/" + id, bearer(globex_admin)).status == 404);
    BOOST_TEST(c.del("/keys/" + id, bearer(s.admin)).status == 204);
    BOOST_TEST(c.get("/operations", bearer(key)).status == 401);
    BOOST_TEST(c.del("/keys/" + id, bearer(s.admin)).status == 404);
}

BOOST_AUTO_TEST_CASE(keys_made_and_revoked_by_another_process_count_within_a_second) {
    auto& s = fixture();
    http_client c(s.port());
    auto [key, id] = make_key(s.database, "acme", "read");
    BOOST_TEST(c.get("/operations", bearer(key)).status == 200);
    auto r = run_buzzer({"keys", "revoke", "--database", s.database.string(), id});
    BOOST_TEST_REQUIRE(r.exit_code == 0, r.err);
    const auto revoked_at = std::chrono::steady_clock::now();
    bool refused = wait_until([&] { return c.get("/operations", bearer(key)).status == 401; }, 3s);
    BOOST_TEST(refused);
    BOOST_TEST((std::chrono::steady_clock::now() - revoked_at < 1500ms));
    auto list = run_buzzer({"keys", "list", "--database", s.database.string(), "--tenant", "acme"});
    BOOST_TEST(list.exit_code == 0);
    BOOST_TEST(list.out.find(id) == std::string::npos);
    BOOST_TEST(list.out.find("bzk_") == std::string::npos);
}

BOOST_AUTO_TEST_CASE(the_session_cookie_reads_and_streams_but_never_writes) {
    auto& s = fixture();
    http_client c(s.port());
    auto opened = c.request("POST", "/session", "", bearer(s.writer));
    BOOST_TEST_REQUIRE(opened.status == 204);
    auto set = opened.header("Set-Cookie");
    BOOST_TEST(set.starts_with("buzzer_session="));
    BOOST_TEST(set.find("HttpOnly") != std::string::npos);
    BOOST_TEST(set.find("Path=/") != std::string::npos);
    BOOST_TEST(set.find("SameSite=Strict") != std::string::npos);
    BOOST_TEST(set.find(s.writer) == std::string::npos);
    const std::string cookie = set.substr(0, set.find(';'));
    headers with_cookie{{"Cookie", cookie}};
    auto id = submit_as(c, s.writer, R"({"kind":"sleep","input":{"seconds":0.3,"steps":2}})");
    BOOST_TEST(c.get("/operations", with_cookie).status == 200);
    BOOST_TEST(c.request("HEAD", "/operations", "", with_cookie).status == 200);
    BOOST_TEST(c.post_json("/operations", R"({"kind":"echo"})", with_cookie).status == 401);
    BOOST_TEST(c.request("POST", "/operations/" + id + "/cancel", "", with_cookie).status == 401);
    BOOST_TEST(c.del("/operations/" + id, with_cookie).status == 401);
    // An event stream with the cookie alone, as EventSource sends it.
    sse_stream stream(s.port(), "/operations/" + id + "/status", std::nullopt,
                      {{"Cookie", cookie}});
    BOOST_TEST_REQUIRE(stream.status() == 200);
    bool completed = false;
    for (const auto& e : stream.read_until_end(10s))
        if (e.type == "completed") completed = true;
    BOOST_TEST(completed);
    auto closed = c.request("DELETE", "/session", "");
    BOOST_TEST(closed.status == 204);
    BOOST_TEST(closed.header("Set-Cookie").find("Max-Age=0") != std::string::npos);
    // A forged cookie is refused.
    BOOST_TEST(c.get("/operations", {{"Cookie", cookie + "x"}}).status == 401);
}

BOOST_AUTO_TEST_CASE(cors_answers_listed_origins_only) {
    auto& s = fixture();
    http_client c(s.port());
    auto pre = c.request("OPTIONS", "/operations", "",
                         {{"Origin", "http://app.example.test"},
                          {"Access-Control-Request-Method", "POST"},
                          {"Access-Control-Request-Headers", "authorization, content-type"}});
    BOOST_TEST(pre.status == 204);
    BOOST_TEST(pre.header("Access-Control-Allow-Origin") == "http://app.example.test");
    BOOST_TEST(pre.header("Access-Control-Allow-Credentials") == "true");
    BOOST_TEST(pre.header("Access-Control-Max-Age") == "300");
    for (const auto* h :
         {"Authorization", "Content-Type", "Idempotency-Key", "Prefer", "Last-Event-ID"})
        BOOST_TEST(pre.header("Access-Control-Allow-Headers").find(h) != std::string::npos, h);
    BOOST_TEST(pre.header("Access-Control-Allow-Methods").find("POST") != std::string::npos);
    auto denied = c.request(
        "OPTIONS", "/operations", "",
        {{"Origin", "http://evil.example.test"}, {"Access-Control-Request-Method", "POST"}});
    BOOST_TEST(denied.status == 403);
    BOOST_TEST(!denied.has_header("Access-Control-Allow-Origin"));
    // Answers to a listed origin carry the headers, errors too.
    for (auto* cred : {"", "x"}) {
        headers h{{"Origin", "http://app.example.test"}};
        if (*cred) h.emplace_back("Authorization", "Bearer " + s.reader);
        auto r = c.get("/operations", h);
        BOOST_TEST(r.header("Access-Control-Allow-Origin") == "http://app.example.test");
        BOOST_TEST(r.header("Vary").find("Origin") != std::string::npos);
        for (const auto* e : {"Location", "Operation-Location", "Retry-After",
                              "Idempotent-Replayed", "Preference-Applied"})
            BOOST_TEST(r.header("Access-Control-Expose-Headers").find(e) != std::string::npos);
    }
    BOOST_TEST(!c.get("/operations", {{"Origin", "http://evil.example.test"}})
                    .has_header("Access-Control-Allow-Origin"));
}

BOOST_AUTO_TEST_CASE(refusals_are_counted_and_logged_without_secrets) {
    auto& s = fixture();
    http_client c(s.port());
    auto [key, id] = make_key(s.database, "acme", "read");
    run_buzzer({"keys", "revoke", "--database", s.database.string(), id});
    wait_until([&] { return c.get("/operations", bearer(key)).status == 401; }, 3s);
    auto metrics = c.get("/metrics", bearer(s.admin)).body;
    BOOST_TEST(metrics.find("buzzer_auth_failures_total{reason=\"missing\"}") != std::string::npos);
    BOOST_TEST(metrics.find("buzzer_auth_failures_total{reason=\"revoked\"}") != std::string::npos);
    BOOST_TEST(metrics.find("buzzer_quota_rejections_total") != std::string::npos);
    // Refusal lines are rate-limited per second, and the cases before this one were refused
    // often: ask again until a line of this key's gets through.
    bool logged = wait_until(
        [&] {
            if (s.server->log_contents().find(id) != std::string::npos) return true;
            c.get("/operations", bearer(key));
            return false;
        },
        5s);
    BOOST_TEST(logged, "the refusal's log line names the key id");
    BOOST_TEST(s.server->log_contents().find(key) == std::string::npos);
    BOOST_TEST(s.server->log_contents().find("127.0.0.1") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(quotas_answer_429_with_retry_after) {
    temp_dir dir("buzzer-quota-");
    auto database = (dir / "buzzer.db");
    auto config = dir.write_file("buzzer.json", R"({"auth": {},
        "tenants": {"slow": {"submit_rate": 0.5, "submit_burst": 2},
                    "small": {"max_pending": 1},
                    "*": {"submit_rate": 1000}}})");
    auto slow = make_key(database, "slow", "write").first;
    auto small = make_key(database, "small", "write").first;
    auto other = make_key(database, "other", "write").first;
    server_process server(server_options{
        .database = database, .args = {"--config", config.string(), "--max-running", "1"}});
    http_client c(server.port());
    submit_as(c, slow, R"({"kind":"echo"})");
    submit_as(c, slow, R"({"kind":"echo"})");
    auto third = c.post_json("/operations", R"({"kind":"echo"})", bearer(slow));
    BOOST_TEST(third.status == 429);
    BOOST_TEST(std::string(third.json().at("type").as_string()).ends_with("/quota-exceeded"));
    BOOST_TEST(std::stoi(third.header("Retry-After")) >= 1);
    // One running (the only slot), one pending: the next is over max_pending.
    auto running = submit_as(c, small, R"({"kind":"sleep","input":{"seconds":30}})");
    wait_as(c, small, running, "running");
    submit_as(c, small, R"({"kind":"echo"})");
    auto over = c.post_json("/operations", R"({"kind":"echo"})", bearer(small));
    BOOST_TEST(over.status == 429);
    BOOST_TEST(over.has_header("Retry-After"));
    // Other tenants are not affected.
    submit_as(c, other, R"({"kind":"echo"})");
}

BOOST_AUTO_TEST_CASE(an_address_that_keeps_failing_is_held_off) {
    temp_dir dir("buzzer-failures-");
    auto database = (dir / "buzzer.db");
    auto key = make_key(database, "acme", "read").first;
    server_process server(server_options{.database = database, .args = {"--auth"}});
    http_client c(server.port());
    int limited = 0;
    for (int i = 0; i < 40 && !limited; ++i) {
        auto r = c.get("/operations", bearer("bzk_wrong" + std::to_string(i) +
                                             "00000000000000000000000000000000000"));
        if (r.status == 429) {
            ++limited;
            BOOST_TEST(
                std::string(r.json().at("type").as_string()).ends_with("/too-many-failures"));
            BOOST_TEST(r.has_header("Retry-After"));
        } else {
            BOOST_TEST(r.status == 401);
        }
    }
    BOOST_TEST(limited == 1);
    // Before any check: even a good key waits.
    BOOST_TEST(c.get("/operations", bearer(key)).status == 429);
    bool back = wait_until([&] { return c.get("/operations", bearer(key)).status == 200; }, 5s);
    BOOST_TEST(back);
}

// SIGHUP re-reads the auth section: a JWT key added and the metrics token changed count for
// the next request, an open stream goes on; a broken file leaves the settings in use.
BOOST_AUTO_TEST_CASE(sighup_reloads_the_auth_settings_and_open_streams_go_on) {
    temp_dir dir{"buzzer-reload-"};
    const auto database = dir / "buzzer.db";
    const key_pair first = make_key_pair("P-256");
    const key_pair second = make_key_pair("P-256");
    const auto first_pem = dir.write_file("first.pem", first.public_pem);
    const auto second_pem = dir.write_file("second.pem", second.public_pem);
    auto config_with = [&](const std::string& keys, const std::string& metrics_token) {
        return R"({"auth": {"jwt": {"issuer": ")" + issuer + R"(", "audience": "buzzer",
                   "keys": [)" +
               keys + R"(]}, "metrics_token": ")" + metrics_token + R"("}})";
    };
    const std::string k1 =
        R"({"kid": "k1", "alg": "ES256", "pem_file": ")" + first_pem.string() + R"("})";
    const std::string k2 =
        R"({"kid": "k2", "alg": "ES256", "pem_file": ")" + second_pem.string() + R"("})";
    const auto config = dir.write_file("buzzer.json", config_with(k1, "old-metrics-token-0123"));
    const auto writer = make_key(database, "acme", "write").first;
    server_process server(
        server_options{.database = database, .args = {"--config", config.string()}});
    const json::object claims{{"iss", issuer},           {"aud", "buzzer"},
                              {"sub", "user-2"},         {"tenant", "acme"},
                              {"scope", "buzzer:write"}, {"exp", now_s() + 600}};
    auto token = [&](const key_pair& pair, const std::string& kid) {
        return sign_jwt(json::serialize(json::object{{"alg", "ES256"}, {"kid", kid}}),
                        json::serialize(claims), buzzer::auth::jwt_alg::es256, pair.private_pem);
    };
    http_client c(server.port());
    BOOST_TEST(c.get("/operations", bearer(token(first, "k1"))).status == 200);
    BOOST_TEST(c.get("/operations", bearer(token(second, "k2"))).status == 401);
    BOOST_TEST(c.get("/metrics", bearer("old-metrics-token-0123")).status == 200);

    // A stream opened before the reload.
    auto id = submit_as(c, writer, R"({"kind":"sleep","input":{"seconds":1.5,"steps":3}})");
    sse_stream stream(server.port(), "/operations/" + id + "/status", std::nullopt, bearer(writer));
    BOOST_TEST_REQUIRE(stream.status() == 200);
    BOOST_TEST_REQUIRE(stream.next_event(10s).has_value());

    auto reloads = [&] {
        std::size_t n = 0;
        const auto log = server.log_contents();
        for (auto at = log.find("info reloaded"); at != std::string::npos;
             at = log.find("info reloaded", at + 1))
            ++n;
        return n;
    };
    dir.write_file("buzzer.json", config_with(k1 + "," + k2, "new-metrics-token-0123"));
    BOOST_TEST_REQUIRE(::kill(server.pid(), SIGHUP) == 0);
    BOOST_TEST_REQUIRE(wait_until([&] { return reloads() == 1; }, 10s));
    BOOST_TEST(c.get("/operations", bearer(token(second, "k2"))).status == 200);
    BOOST_TEST(c.get("/operations", bearer(token(first, "k1"))).status == 200);
    BOOST_TEST(c.get("/metrics", bearer("new-metrics-token-0123")).status == 200);
    BOOST_TEST(c.get("/metrics", bearer("old-metrics-token-0123")).status == 401);

    // The stream opened before goes on to its end.
    bool completed = false;
    for (const auto& e : stream.read_until_end(15s))
        if (e.type == "completed") completed = true;
    BOOST_TEST(completed);

    // A file that does not parse: an error, and the settings in use stay.
    dir.write_file("buzzer.json", R"({"auth": {"jwt": {"keys": [)");
    BOOST_TEST_REQUIRE(::kill(server.pid(), SIGHUP) == 0);
    BOOST_TEST_REQUIRE(wait_until(
        [&] {
            return server.log_contents().find("reload: auth, tenants and cors not reloaded") !=
                   std::string::npos;
        },
        10s));
    BOOST_TEST(c.get("/operations", bearer(token(second, "k2"))).status == 200);
    BOOST_TEST(c.get("/metrics", bearer("new-metrics-token-0123")).status == 200);
    BOOST_TEST(reloads() == 1u);

    // Turning credentials off takes a restart.
    dir.write_file("buzzer.json", R"({"auth": "none"})");
    BOOST_TEST_REQUIRE(::kill(server.pid(), SIGHUP) == 0);
    BOOST_TEST_REQUIRE(wait_until(
        [&] {
            return server.log_contents().find("turning credentials on or off needs a restart") !=
                   std::string::npos;
        },
        10s));
    BOOST_TEST(c.get("/operations").status == 401);
    BOOST_TEST(server.terminate() == 0);
}

BOOST_AUTO_TEST_CASE(open_mode_is_for_loopback_only) {
    auto r = run_buzzer({"--listen", "0.0.0.0:0", "--database", "/nonexistent/x.db"});
    BOOST_TEST(r.exit_code == 2);
    BOOST_TEST(r.err.find("--no-auth") != std::string::npos);
    temp_dir dir("buzzer-open-");
    server_process open(server_options{.database = (dir / "b.db"), .args = {"--no-auth"}});
    http_client c(open.port());
    BOOST_TEST(c.get("/operations").status == 200);
}
