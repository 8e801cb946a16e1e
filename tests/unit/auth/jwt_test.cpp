#include "auth/jwt.hpp"

#include <atomic>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <boost/test/unit_test.hpp>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "auth/base64url.hpp"
#include "support/jwt_sign.hpp"

using namespace buzzer;
using namespace buzzer::auth;
namespace json = boost::json;
using buzzer::test::key_pair;
using buzzer::test::make_key_pair;
using buzzer::test::sign_jwt;

namespace {

constexpr core::millis now = 1'800'000'000'000;
constexpr std::int64_t now_s = now / 1000;
const std::string hs256_secret(32, 'k');
const std::string hs384_secret(48, 'l');
const std::string hs512_secret(64, 'm');

// Key pairs are slow to make: each kind once for the whole suite.
const key_pair& pair_of(const std::string& kind) {
    static std::map<std::string, key_pair> pairs;
    auto it = pairs.find(kind);
    if (it == pairs.end()) it = pairs.emplace(kind, make_key_pair(kind)).first;
    return it->second;
}

jwt_rules rules() {
    jwt_rules r;
    r.issuer = "https://login.example.com/";
    r.audience = "buzzer";
    return r;
}

json::object claims() {
    return json::object{{"iss", "https://login.example.com/"},
                        {"aud", "buzzer"},
                        {"sub", "alice"},
                        {"tenant", "acme"},
                        {"scope", "openid buzzer:write"},
                        {"iat", now_s - 10},
                        {"exp", now_s + 600}};
}

std::string header(std::string_view alg, std::string_view kid) {
    json::object h{{"alg", alg}, {"typ", "JWT"}};
    if (!kid.empty()) h["kid"] = kid;
    return json::serialize(h);
}

// Every kind of key, each under its own kid: "hs256" ... "es512".
const jwt_keys& all_keys() {
    static const jwt_keys keys = [] {
        jwt_keys k;
        k.add_secret("hs256", jwt_alg::hs256, hs256_secret);
        k.add_secret("hs384", jwt_alg::hs384, hs384_secret);
        k.add_secret("hs512", jwt_alg::hs512, hs512_secret);
        k.add_pem("rs256", jwt_alg::rs256, pair_of("RSA-2048").public_pem);
        k.add_pem("rs384", jwt_alg::rs384, pair_of("RSA-2048").public_pem);
        k.add_pem("rs512", jwt_alg::rs512, pair_of("RSA-3072").public_pem);
        k.add_pem("es256", jwt_alg::es256, pair_of("P-256").public_pem);
        k.add_pem("es384", jwt_alg::es384, pair_of("P-384").public_pem);
        k.add_pem("es512", jwt_alg::es512, pair_of("P-521").public_pem);
        return k;
    }();
    return keys;
}

// What signs for each kid of all_keys().
std::string signing_key(std::string_view kid) {
    if (kid == "hs256") return hs256_secret;
    if (kid == "hs384") return hs384_secret;
    if (kid == "hs512") return hs512_secret;
    if (kid == "rs256" || kid == "rs384") return pair_of("RSA-2048").private_pem;
    if (kid == "rs512") return pair_of("RSA-3072").private_pem;
    if (kid == "es256") return pair_of("P-256").private_pem;
    if (kid == "es384") return pair_of("P-384").private_pem;
    return pair_of("P-521").private_pem;
}

// A token of the ES256 key with `payload`.
std::string es256(const json::object& payload) {
    return sign_jwt(header("ES256", "es256"), json::serialize(payload), jwt_alg::es256,
                    signing_key("es256"));
}

std::variant<jwt_claims, jwt_error> verify(std::string_view token, const jwt_rules& r = rules()) {
    return verify_jwt(token, all_keys(), r, now);
}

// The error of a refused token; fails the test case when it was accepted.
std::optional<jwt_error> error_of(std::string_view token, const jwt_rules& r = rules()) {
    auto result = verify(token, r);
    if (auto* e = std::get_if<jwt_error>(&result)) return *e;
    return std::nullopt;
}

std::string with(json::object o, std::string_view key, json::value v) {
    o[key] = std::move(v);
    return es256(o);
}
std::string without(json::object o, std::string_view key) {
    o.erase(key);
    return es256(o);
}

// A header and a payload as given, signed with the ES256 key.
std::string raw(std::string_view header_text, std::string_view payload_text) {
    return sign_jwt(header_text, payload_text, jwt_alg::es256, signing_key("es256"));
}

}  // namespace

BOOST_TEST_DONT_PRINT_LOG_VALUE(jwt_error)
BOOST_TEST_DONT_PRINT_LOG_VALUE(std::optional<jwt_error>)

BOOST_AUTO_TEST_SUITE(jwt)

BOOST_AUTO_TEST_CASE(algorithm_names_round_trip) {
    for (auto a : {jwt_alg::hs256, jwt_alg::hs384, jwt_alg::hs512, jwt_alg::rs256, jwt_alg::rs384,
                   jwt_alg::rs512, jwt_alg::es256, jwt_alg::es384, jwt_alg::es512})
        BOOST_TEST((parse_jwt_alg(to_string(a)) == a));
    BOOST_TEST(to_string(jwt_alg::es384) == "ES384");
    BOOST_TEST(!parse_jwt_alg("none"));
    BOOST_TEST(!parse_jwt_alg("hs256"));
    BOOST_TEST(!parse_jwt_alg("PS256"));
    BOOST_TEST(!parse_jwt_alg(""));
}

BOOST_AUTO_TEST_CASE(tokens_of_every_algorithm_verify) {
    const std::pair<const char*, jwt_alg> algs[] = {
        {"hs256", jwt_alg::hs256}, {"hs384", jwt_alg::hs384}, {"hs512", jwt_alg::hs512},
        {"rs256", jwt_alg::rs256}, {"rs384", jwt_alg::rs384}, {"rs512", jwt_alg::rs512},
        {"es256", jwt_alg::es256}, {"es384", jwt_alg::es384}, {"es512", jwt_alg::es512}};
    for (const auto& [kid, alg] : algs) {
        const auto token =
            sign_jwt(header(to_string(alg), kid), json::serialize(claims()), alg, signing_key(kid));
        auto result = verify(token);
        auto* c = std::get_if<jwt_claims>(&result);
        BOOST_TEST_REQUIRE(c != nullptr, kid);
        BOOST_TEST(c->tenant == "acme");
        BOOST_TEST(c->subject == "alice");
        BOOST_TEST((c->role == core::role::write));
        BOOST_TEST(!c->kinds.has_value());
        BOOST_TEST(c->expires_at == (now_s + 600) * 1000);
    }
}

BOOST_AUTO_TEST_CASE(the_only_key_serves_a_token_without_kid) {
    jwt_keys one;
    one.add_pem("k1", jwt_alg::es256, pair_of("P-256").public_pem);
    const auto payload = json::serialize(claims());
    const auto key = signing_key("es256");
    auto no_kid = sign_jwt(header("ES256", ""), payload, jwt_alg::es256, key);
    BOOST_TEST(std::holds_alternative<jwt_claims>(verify_jwt(no_kid, one, rules(), now)));
    // A kid must still match it.
    auto other = sign_jwt(header("ES256", "k2"), payload, jwt_alg::es256, key);
    BOOST_TEST(
        (std::get<jwt_error>(verify_jwt(other, one, rules(), now)) == jwt_error::unknown_key));
    // A key configured without kid: a token without kid.
    jwt_keys anonymous;
    anonymous.add_pem("", jwt_alg::es256, pair_of("P-256").public_pem);
    BOOST_TEST(std::holds_alternative<jwt_claims>(verify_jwt(no_kid, anonymous, rules(), now)));
    // Among several keys, a token without kid is refused.
    BOOST_TEST((error_of(no_kid) == jwt_error::unknown_key));
    // No keys at all.
    BOOST_TEST((std::get<jwt_error>(verify_jwt(no_kid, jwt_keys{}, rules(), now)) ==
                jwt_error::unknown_key));
}

BOOST_AUTO_TEST_CASE(a_certificate_pem_gives_its_public_key) {
    const auto& pair = pair_of("P-256");
    jwt_keys keys;
    keys.add_pem("c1", jwt_alg::es256, test::make_certificate(pair));
    const auto token = sign_jwt(header("ES256", "c1"), json::serialize(claims()), jwt_alg::es256,
                                pair.private_pem);
    BOOST_TEST(std::holds_alternative<jwt_claims>(verify_jwt(token, keys, rules(), now)));
}

BOOST_AUTO_TEST_CASE(alg_none_is_refused) {
    const auto payload = base64url_encode(json::serialize(claims()));
    for (auto alg : {"none", "None", "NONE", "nOnE"}) {
        const auto h = base64url_encode(header(alg, "es256"));
        BOOST_TEST((error_of(h + "." + payload + ".") == jwt_error::algorithm), alg);
        BOOST_TEST((error_of(h + "." + payload + ".c2ln") == jwt_error::algorithm), alg);
    }
    // Without a kid, against a set of one key.
    jwt_keys one;
    one.add_secret("", jwt_alg::hs256, hs256_secret);
    const auto h = base64url_encode(R"({"alg":"none"})");
    BOOST_TEST((std::get<jwt_error>(verify_jwt(h + "." + payload + ".", one, rules(), now)) ==
                jwt_error::algorithm));
}

BOOST_AUTO_TEST_CASE(hs256_signed_with_the_public_key_is_refused) {
    // The classic confusion: an HMAC keyed with the PEM text the server holds as public key.
    const auto payload = json::serialize(claims());
    for (auto [kid, kind] : {std::pair{"es256", "P-256"}, std::pair{"rs256", "RSA-2048"}}) {
        const auto& pem = pair_of(kind).public_pem;
        const auto token = sign_jwt(header("HS256", kid), payload, jwt_alg::hs256, pem);
        BOOST_TEST((error_of(token) == jwt_error::algorithm), kid);
    }
    jwt_keys one;
    one.add_pem("", jwt_alg::rs256, pair_of("RSA-2048").public_pem);
    const auto token =
        sign_jwt(header("HS256", ""), payload, jwt_alg::hs256, pair_of("RSA-2048").public_pem);
    BOOST_TEST((std::get<jwt_error>(verify_jwt(token, one, rules(), now)) == jwt_error::algorithm));
}

BOOST_AUTO_TEST_CASE(another_algorithm_than_the_keys_is_refused) {
    const auto payload = json::serialize(claims());
    // ES384 named, the ES256 key's kid: the configuration decides.
    BOOST_TEST((error_of(sign_jwt(header("ES384", "es256"), payload, jwt_alg::es384,
                                  signing_key("es384"))) == jwt_error::algorithm));
    BOOST_TEST((error_of(sign_jwt(header("RS384", "rs256"), payload, jwt_alg::rs384,
                                  signing_key("rs256"))) == jwt_error::algorithm));
    BOOST_TEST((error_of(sign_jwt(header("HS512", "hs256"), payload, jwt_alg::hs512,
                                  hs256_secret)) == jwt_error::algorithm));
    BOOST_TEST((error_of(sign_jwt(header("PS256", "rs256"), payload, jwt_alg::rs256,
                                  signing_key("rs256"))) == jwt_error::algorithm));
}

BOOST_AUTO_TEST_CASE(a_changed_payload_or_signature_is_refused) {
    const auto good = es256(claims());
    auto admin = claims();
    admin["scope"] = "buzzer:admin";
    const auto forged = es256(admin);
    const auto dot1 = good.find('.');
    const auto dot2 = good.rfind('.');
    // The admin payload under the write token's signature.
    const auto spliced =
        good.substr(0, dot1) + forged.substr(dot1, forged.rfind('.') - dot1) + good.substr(dot2);
    BOOST_TEST((error_of(spliced) == jwt_error::signature));
    // One bit of the signature flipped.
    auto flipped = good;
    flipped[dot2 + 5] = flipped[dot2 + 5] == 'A' ? 'B' : 'A';
    BOOST_TEST((error_of(flipped) == jwt_error::signature));
    // Signatures of a wrong length: empty, short, long.
    BOOST_TEST((error_of(good.substr(0, dot2 + 1)) == jwt_error::signature));
    const auto signature = *base64url_decode(good.substr(dot2 + 1));
    BOOST_TEST((error_of(good.substr(0, dot2 + 1) +
                         base64url_encode(signature.substr(0, signature.size() - 1))) ==
                jwt_error::signature));
    BOOST_TEST((error_of(good.substr(0, dot2 + 1) + base64url_encode(signature + '\0')) ==
                jwt_error::signature));
    // Signed by another key of the same curve.
    const auto other = make_key_pair("P-256");
    BOOST_TEST((error_of(sign_jwt(header("ES256", "es256"), json::serialize(claims()),
                                  jwt_alg::es256, other.private_pem)) == jwt_error::signature));
    // R and S all zero.
    BOOST_TEST((error_of(good.substr(0, dot2 + 1) + base64url_encode(std::string(64, '\0'))) ==
                jwt_error::signature));
    // An HMAC under another secret.
    BOOST_TEST((error_of(sign_jwt(header("HS256", "hs256"), json::serialize(claims()),
                                  jwt_alg::hs256, std::string(32, 'x'))) == jwt_error::signature));
}

BOOST_AUTO_TEST_CASE(time_claims_are_checked_with_the_leeway) {
    auto c = claims();
    BOOST_TEST((error_of(with(c, "exp", now_s - 31)) == jwt_error::expired));
    BOOST_TEST((error_of(with(c, "exp", now_s - 30)) == jwt_error::expired));
    BOOST_TEST(!error_of(with(c, "exp", now_s - 29)));
    BOOST_TEST((error_of(with(c, "nbf", now_s + 31)) == jwt_error::not_yet_valid));
    BOOST_TEST(!error_of(with(c, "nbf", now_s + 29)));
    BOOST_TEST((error_of(with(c, "iat", now_s + 31)) == jwt_error::issued_in_future));
    BOOST_TEST(!error_of(with(c, "iat", now_s + 29)));
    BOOST_TEST(!error_of(without(c, "iat")));
    // Fractions are NumericDates too.
    BOOST_TEST(!error_of(with(c, "exp", static_cast<double>(now_s) + 0.5)));
    auto strict = rules();
    strict.leeway_s = 0;
    BOOST_TEST((error_of(with(c, "exp", now_s), strict) == jwt_error::expired));
    BOOST_TEST(!error_of(with(c, "exp", now_s + 1), strict));
}

BOOST_AUTO_TEST_CASE(exp_is_required_and_dates_are_numbers_in_range) {
    auto c = claims();
    BOOST_TEST((error_of(without(c, "exp")) == jwt_error::malformed));
    BOOST_TEST((error_of(with(c, "exp", "1900000000")) == jwt_error::malformed));
    BOOST_TEST((error_of(with(c, "exp", nullptr)) == jwt_error::malformed));
    BOOST_TEST((error_of(with(c, "exp", true)) == jwt_error::malformed));
    BOOST_TEST((error_of(with(c, "nbf", "0")) == jwt_error::malformed));
    BOOST_TEST((error_of(with(c, "iat", json::array{1})) == jwt_error::malformed));
    BOOST_TEST((error_of(with(c, "exp", 1e16)) == jwt_error::malformed));
    BOOST_TEST(
        (error_of(with(c, "exp", std::uint64_t(18446744073709551615ull))) == jwt_error::malformed));
    BOOST_TEST((error_of(with(c, "nbf", -1e300)) == jwt_error::malformed));
    // What the JSON parser turns into infinities and huge doubles.
    const std::string rest = R"(,"iss":"https://login.example.com/","aud":"buzzer","tenant":"t"})";
    const auto h = header("ES256", "es256");
    BOOST_TEST((error_of(raw(h, R"({"exp":1e400)" + rest)) == jwt_error::malformed));
    BOOST_TEST((error_of(raw(h, R"({"exp":-1e400)" + rest)) == jwt_error::malformed));
    BOOST_TEST((error_of(raw(h, R"({"exp":123456789012345678901234567890)" + rest)) ==
                jwt_error::malformed));
    BOOST_TEST((error_of(raw(h, R"({"exp":NaN)" + rest)) == jwt_error::malformed));
    BOOST_TEST((error_of(raw(h, R"({"exp":1e-400)" + rest)) == jwt_error::expired));
}

BOOST_AUTO_TEST_CASE(the_issuer_must_match) {
    auto c = claims();
    BOOST_TEST((error_of(with(c, "iss", "https://evil.example.com/")) == jwt_error::issuer));
    BOOST_TEST((error_of(with(c, "iss", "https://login.example.com")) == jwt_error::issuer));
    BOOST_TEST((error_of(without(c, "iss")) == jwt_error::issuer));
    BOOST_TEST((error_of(with(c, "iss", 42)) == jwt_error::malformed));
}

BOOST_AUTO_TEST_CASE(the_audience_must_be_or_contain_ours) {
    auto c = claims();
    BOOST_TEST((error_of(with(c, "aud", "other")) == jwt_error::audience));
    BOOST_TEST((error_of(with(c, "aud", "Buzzer")) == jwt_error::audience));
    BOOST_TEST((error_of(with(c, "aud", json::array{"a", "b"})) == jwt_error::audience));
    BOOST_TEST((error_of(with(c, "aud", json::array{})) == jwt_error::audience));
    BOOST_TEST((error_of(without(c, "aud")) == jwt_error::audience));
    BOOST_TEST(!error_of(with(c, "aud", json::array{"a", "buzzer"})));
    BOOST_TEST((error_of(with(c, "aud", json::array{"buzzer", 1})) == jwt_error::malformed));
    BOOST_TEST((error_of(with(c, "aud", json::object{{"buzzer", true}})) == jwt_error::malformed));
}

BOOST_AUTO_TEST_CASE(the_tenant_claim_names_a_tenant) {
    auto c = claims();
    BOOST_TEST((error_of(without(c, "tenant")) == jwt_error::no_tenant));
    BOOST_TEST((error_of(with(c, "tenant", "")) == jwt_error::no_tenant));
    BOOST_TEST((error_of(with(c, "tenant", 7)) == jwt_error::no_tenant));
    auto r = rules();
    r.tenant_claim = "org";
    BOOST_TEST((error_of(es256(c), r) == jwt_error::no_tenant));
    auto result = verify(with(c, "org", "globex"), r);
    BOOST_TEST_REQUIRE(std::holds_alternative<jwt_claims>(result));
    BOOST_TEST(std::get<jwt_claims>(result).tenant == "globex");
}

BOOST_AUTO_TEST_CASE(the_role_is_the_highest_buzzer_scope) {
    auto role_of = [](json::value scope) {
        auto result = verify(with(claims(), "scope", std::move(scope)));
        BOOST_TEST_REQUIRE(std::holds_alternative<jwt_claims>(result));
        return std::get<jwt_claims>(result).role;
    };
    BOOST_TEST((role_of("buzzer:read") == core::role::read));
    BOOST_TEST((role_of("buzzer:read buzzer:admin buzzer:write") == core::role::admin));
    BOOST_TEST((role_of("openid  buzzer:write ") == core::role::write));
    BOOST_TEST(!role_of("openid profile").has_value());
    BOOST_TEST(!role_of("buzzer:adminx buzzer: buzzer:Admin xbuzzer:read").has_value());
    BOOST_TEST(!role_of("").has_value());
    auto result = verify(without(claims(), "scope"));
    BOOST_TEST_REQUIRE(std::holds_alternative<jwt_claims>(result));
    BOOST_TEST(!std::get<jwt_claims>(result).role.has_value());
    BOOST_TEST(
        (error_of(with(claims(), "scope", json::array{"buzzer:admin"})) == jwt_error::malformed));
}

BOOST_AUTO_TEST_CASE(buzzer_kinds_limits_kinds) {
    auto result = verify(with(claims(), "buzzer_kinds", json::array{"resize", "echo"}));
    BOOST_TEST_REQUIRE(std::holds_alternative<jwt_claims>(result));
    const auto& kinds = std::get<jwt_claims>(result).kinds;
    BOOST_TEST_REQUIRE(kinds.has_value());
    BOOST_TEST(kinds->size() == 2u);
    BOOST_TEST(kinds->at(1) == "echo");
    result = verify(with(claims(), "buzzer_kinds", json::array{}));
    BOOST_TEST(std::get<jwt_claims>(result).kinds->empty());
    BOOST_TEST((error_of(with(claims(), "buzzer_kinds", "resize")) == jwt_error::malformed));
    BOOST_TEST(
        (error_of(with(claims(), "buzzer_kinds", json::array{"a", 1})) == jwt_error::malformed));
    BOOST_TEST((error_of(with(claims(), "buzzer_kinds", json::array{json::array{"a"}})) ==
                jwt_error::malformed));
    BOOST_TEST((error_of(with(claims(), "sub", 12)) == jwt_error::malformed));
}

BOOST_AUTO_TEST_CASE(an_unknown_kid_is_refused) {
    BOOST_TEST((error_of(sign_jwt(header("ES256", "k9"), json::serialize(claims()), jwt_alg::es256,
                                  signing_key("es256"))) == jwt_error::unknown_key));
    BOOST_TEST(
        (error_of(sign_jwt(header("ES256", "ES256"), json::serialize(claims()), jwt_alg::es256,
                           signing_key("es256"))) == jwt_error::unknown_key));
    BOOST_TEST((error_of(raw(R"({"alg":"ES256","kid":7})", json::serialize(claims()))) ==
                jwt_error::malformed));
}

BOOST_AUTO_TEST_CASE(a_token_over_8_kib_is_refused) {
    BOOST_TEST((error_of(std::string(8193, 'A')) == jwt_error::too_large));
    BOOST_TEST((error_of(std::string(8193, '.')) == jwt_error::too_large));
    // Well signed, but too large.
    auto big = claims();
    big["pad"] = std::string(8000, 'p');
    const auto token = es256(big);
    BOOST_TEST(token.size() > 8192u);
    BOOST_TEST((error_of(token) == jwt_error::too_large));
    auto r = rules();
    r.max_size = token.size();
    BOOST_TEST(!error_of(token, r));
}

BOOST_AUTO_TEST_CASE(what_is_not_three_base64url_parts_is_malformed) {
    const auto good = es256(claims());
    const auto dot1 = good.find('.');
    const auto dot2 = good.rfind('.');
    for (std::string t :
         {std::string(""), std::string("."), std::string(".."), std::string("..."),
          std::string("abc"), good.substr(0, dot2), good + ".", good + "." + good,
          good.substr(0, dot1) + "*" + good.substr(dot1),
          good.substr(0, dot1) + "=" + good.substr(dot1), "  " + good,
          good.substr(0, dot2 + 1) + "c2ln+/",
          good.substr(0, dot1 + 1) + "\xc3\xa9" + good.substr(dot1 + 1), std::string("a\0b.c.d", 7),
          good.substr(0, dot1 - 1) + "." + good.substr(dot1 + 1)})
        BOOST_TEST((error_of(t) == jwt_error::malformed), "'" << t << "'");
}

BOOST_AUTO_TEST_CASE(headers_and_payloads_that_are_not_json_objects_are_malformed) {
    const auto payload = json::serialize(claims());
    const auto h = header("ES256", "es256");
    for (const std::string& bad_header : std::vector<std::string>{
             "", "{", "[]", "\"ES256\"", "null", R"({"alg":"ES256","kid":"es256"} x)",
             R"({"alg":ES256})", R"({"kid":"es256"})", R"({"alg":256,"kid":"es256"})",
             R"({"alg":"ES256","kid":"es256","alg":"ES256"})",
             R"({"alg":"ES256","kid":"es256","crit":["exp"]})",
             std::string(R"({"alg":"ES256","kid":"es256","x":")") + "\xff\xfe" + "\"}",
             R"({"alg":"ES256","kid":"es256","x":)" + std::string(40, '[') + std::string(40, ']') +
                 "}"})
        BOOST_TEST((error_of(raw(bad_header, payload)) == jwt_error::malformed), bad_header);
    for (
        const std::string& bad_payload : std::vector<std::string>{
            "", "{", "[1]", "42", "\"x\"", payload + "x", payload.substr(0, payload.size() - 1),
            R"({"exp":1,"exp":)" + std::to_string(now_s + 600) +
                R"(,"iss":"https://login.example.com/","aud":"buzzer","tenant":"acme"})",
            R"({"exp":)" + std::to_string(now_s + 600) +
                R"(,"iss":"https://login.example.com/","aud":"buzzer","tenant":"acme","tenant":"x"})",
            std::string(R"({"sub":")") + "\xc0\xaf" + "\"}",
            std::string(R"({"sub":"a)") + std::string("\0", 1) + "\"}",
            std::string(50, '[') + std::string(50, ']')})
        BOOST_TEST((error_of(raw(h, bad_payload)) == jwt_error::malformed), bad_payload);
    // Unicode, written as such or escaped, is fine.
    BOOST_TEST(!error_of(with(claims(), "sub", "J\xc3\xbcrgen \xe2\x9c\x93")));
    BOOST_TEST(
        !error_of(raw(h, payload.substr(0, payload.size() - 1) + R"(,"x":"\u00fc\ud83d\ude00"})")));
}

BOOST_AUTO_TEST_CASE(the_errors_are_described_without_naming_keys) {
    const jwt_error all[] = {
        jwt_error::malformed,     jwt_error::too_large,        jwt_error::algorithm,
        jwt_error::unknown_key,   jwt_error::signature,        jwt_error::expired,
        jwt_error::not_yet_valid, jwt_error::issued_in_future, jwt_error::issuer,
        jwt_error::audience,      jwt_error::no_tenant};
    std::set<std::string_view> seen;
    for (auto e : all) {
        BOOST_TEST(!describe(e).empty());
        seen.insert(describe(e));
    }
    BOOST_TEST(seen.size() == std::size(all));
    BOOST_TEST(describe(jwt_error::expired) == "the token has expired");
}

BOOST_AUTO_TEST_CASE(keys_that_do_not_fit_their_algorithm_are_refused) {
    auto refused = [](auto add, std::string_view words) {
        jwt_keys k;
        try {
            add(k);
        } catch (const std::invalid_argument& e) {
            BOOST_TEST(std::string_view(e.what()).find(words) != std::string_view::npos, e.what());
            return;
        }
        BOOST_ERROR("accepted: " << words);
    };
    const auto& ec256 = pair_of("P-256").public_pem;
    const auto& rsa = pair_of("RSA-2048").public_pem;
    refused([&](jwt_keys& k) { k.add_pem("a", jwt_alg::rs256, ec256); }, "not an RSA key");
    refused([&](jwt_keys& k) { k.add_pem("a", jwt_alg::es256, rsa); }, "not an EC key");
    refused([&](jwt_keys& k) { k.add_pem("a", jwt_alg::es256, pair_of("P-384").public_pem); },
            "P-256");
    refused([&](jwt_keys& k) { k.add_pem("a", jwt_alg::es512, ec256); }, "P-521");
    refused([&](jwt_keys& k) { k.add_pem("a", jwt_alg::rs256, pair_of("RSA-1024").public_pem); },
            "2048");
    refused([&](jwt_keys& k) { k.add_pem("a", jwt_alg::hs256, ec256); }, "secret");
    refused([&](jwt_keys& k) { k.add_pem("a", jwt_alg::es256, "-----BEGIN PUBLIC KEY-----\nxx"); },
            "PUBLIC KEY");
    refused([&](jwt_keys& k) { k.add_pem("a", jwt_alg::es256, ""); }, "PUBLIC KEY");
    refused([&](jwt_keys& k) { k.add_pem("a", jwt_alg::es256, pair_of("P-256").private_pem); },
            "private key");
    refused([&](jwt_keys& k) { k.add_secret("a", jwt_alg::hs256, std::string(31, 'x')); }, "32");
    refused([&](jwt_keys& k) { k.add_secret("a", jwt_alg::hs384, std::string(47, 'x')); }, "48");
    refused([&](jwt_keys& k) { k.add_secret("a", jwt_alg::hs512, std::string(63, 'x')); }, "64");
    refused([&](jwt_keys& k) { k.add_secret("a", jwt_alg::rs256, std::string(64, 'x')); }, "PEM");
    refused(
        [&](jwt_keys& k) {
            k.add_pem("a", jwt_alg::es256, ec256);
            k.add_secret("a", jwt_alg::hs256, hs256_secret);
        },
        "repeats");
    refused(
        [&](jwt_keys& k) {
            k.add_pem("", jwt_alg::es256, ec256);
            k.add_secret("b", jwt_alg::hs256, hs256_secret);
        },
        "only key");
    refused(
        [&](jwt_keys& k) {
            k.add_pem("a", jwt_alg::es256, ec256);
            k.add_secret("", jwt_alg::hs256, hs256_secret);
        },
        "only key");
    // A set moved from is empty, and can be filled again.
    jwt_keys moved;
    moved.add_pem("a", jwt_alg::es256, ec256);
    jwt_keys taker = std::move(moved);
    BOOST_TEST(taker.size() == 1u);
    BOOST_TEST(moved.size() == 0u);
    moved.add_secret("h", jwt_alg::hs256, hs256_secret);
    BOOST_TEST(moved.size() == 1u);
    // A refused key leaves the set as it was.
    jwt_keys k;
    k.add_pem("a", jwt_alg::es256, ec256);
    BOOST_CHECK_THROW(k.add_pem("b", jwt_alg::rs256, ec256), std::invalid_argument);
    BOOST_TEST(k.size() == 1u);
}

BOOST_AUTO_TEST_CASE(many_threads_verify_with_one_key_set) {
    std::vector<std::string> tokens;
    for (auto [kid, alg] : {std::pair{"hs256", jwt_alg::hs256}, std::pair{"rs256", jwt_alg::rs256},
                            std::pair{"es384", jwt_alg::es384}})
        tokens.push_back(sign_jwt(header(to_string(alg), kid), json::serialize(claims()), alg,
                                  signing_key(kid)));
    std::atomic<int> good = 0;
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
        threads.emplace_back([&] {
            for (int i = 0; i < 30; ++i)
                for (const auto& token : tokens)
                    if (std::holds_alternative<jwt_claims>(verify(token))) ++good;
        });
    for (auto& t : threads) t.join();
    BOOST_TEST(good.load() == 4 * 30 * 3);
}

BOOST_AUTO_TEST_SUITE_END()
