#include "auth/session.hpp"

#include <boost/test/unit_test.hpp>
#include <string>

#include "auth/base64url.hpp"

using namespace buzzer;
using namespace buzzer::auth;

namespace {

const std::string secret(32, 's');
constexpr core::millis now = 1'800'000'000'000;

session sample() {
    session s;
    s.tenant = "acme";
    s.role = core::role::write;
    s.kinds = std::vector<std::string>{"resize", "echo"};
    s.credential = "key_0123456789abcdefghij";
    s.expires_at = now + 3'600'000;
    return s;
}

}  // namespace

namespace buzzer::core {
std::ostream& boost_test_print_type(std::ostream& os, role r) { return os << to_string(r); }
}  // namespace buzzer::core
BOOST_TEST_DONT_PRINT_LOG_VALUE(std::optional<std::string_view>)

BOOST_AUTO_TEST_SUITE(session_cookie)

BOOST_AUTO_TEST_CASE(opens_what_it_sealed) {
    const auto value = seal_session(sample(), secret);
    BOOST_TEST(find_cookie("buzzer_session=" + value, "buzzer_session") == value);
    const auto s = open_session(value, secret, now);
    BOOST_TEST_REQUIRE(s.has_value());
    BOOST_TEST(s->tenant == "acme");
    BOOST_TEST(s->role == core::role::write);
    BOOST_TEST_REQUIRE(s->kinds.has_value());
    BOOST_TEST(s->kinds->size() == 2u);
    BOOST_TEST(s->kinds->at(0) == "resize");
    BOOST_TEST(s->credential == "key_0123456789abcdefghij");
    BOOST_TEST(s->expires_at == now + 3'600'000);

    auto open = sample();
    open.kinds.reset();
    open.role = core::role::admin;
    const auto back = open_session(seal_session(open, secret), secret, now);
    BOOST_TEST_REQUIRE(back.has_value());
    BOOST_TEST(!back->kinds.has_value());
    BOOST_TEST(back->role == core::role::admin);
}

BOOST_AUTO_TEST_CASE(holds_only_what_it_was_given) {
    // The cookie is signed, not encrypted: its payload is readable and holds no secret.
    const auto value = seal_session(sample(), secret);
    const auto payload = base64url_decode(value.substr(0, value.find('.')));
    BOOST_TEST_REQUIRE(payload.has_value());
    BOOST_TEST(payload->find("acme") != std::string::npos);
    BOOST_TEST(payload->find(secret) == std::string::npos);
    BOOST_TEST(value.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                       "0123456789-_.") == std::string::npos);
}

BOOST_AUTO_TEST_CASE(refuses_a_session_sealed_with_another_secret) {
    const auto value = seal_session(sample(), secret);
    BOOST_TEST(!open_session(value, std::string(32, 't'), now));
    BOOST_TEST(!open_session(value, std::string(31, 's'), now));  // too short to be a secret
    BOOST_CHECK_THROW(seal_session(sample(), "short"), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(refuses_a_changed_payload_or_mac) {
    const auto value = seal_session(sample(), secret);
    const auto dot = value.find('.');
    auto other = sample();
    other.role = core::role::admin;
    const auto forged_payload = seal_session(other, std::string(32, 'x'));
    // The admin payload with the MAC of the write one.
    BOOST_TEST(!open_session(forged_payload.substr(0, forged_payload.find('.')) + value.substr(dot),
                             secret, now));
    std::string flipped = value;
    flipped[dot + 3] = flipped[dot + 3] == 'A' ? 'B' : 'A';
    BOOST_TEST(!open_session(flipped, secret, now));
    BOOST_TEST(!open_session(value.substr(0, value.size() - 1), secret, now));
    BOOST_TEST(!open_session(value.substr(0, dot), secret, now));
    BOOST_TEST(!open_session(value + ".x", secret, now));
}

BOOST_AUTO_TEST_CASE(refuses_an_expired_session) {
    const auto value = seal_session(sample(), secret);
    BOOST_TEST(open_session(value, secret, now + 3'599'999).has_value());
    BOOST_TEST(!open_session(value, secret, now + 3'600'000));
}

BOOST_AUTO_TEST_CASE(refuses_garbage_and_oversized_values) {
    for (std::string v : {"", ".", "..", "a.b", "!!!.???", "eyJ2IjoxfQ.", "."})
        BOOST_TEST(!open_session(v, secret, now), v);
    BOOST_TEST(!open_session(std::string(5000, 'A') + "." + std::string(43, 'A'), secret, now));
    // Over the size limit before anything is checked.
    auto big = sample();
    big.tenant = std::string(4000, 't');
    BOOST_CHECK_THROW(seal_session(big, secret), std::invalid_argument);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(cookie_header)

BOOST_AUTO_TEST_CASE(finds_a_cookie_among_others) {
    BOOST_TEST(find_cookie("a=1", "a") == "1");
    BOOST_TEST(find_cookie("a=1; b=2; c=3", "b") == "2");
    BOOST_TEST(find_cookie("a=1;b=2", "b") == "2");
    BOOST_TEST(find_cookie("  a = 1 ;  b=2  ", "a") == "1");
    BOOST_TEST(find_cookie("a=1; b=", "b") == "");
    BOOST_TEST(find_cookie("ab=1; b=2", "b") == "2");
    BOOST_TEST(!find_cookie("a=1; b=2", "c"));
    BOOST_TEST(!find_cookie("a=1", "A"));
    BOOST_TEST(!find_cookie("", "a"));
    BOOST_TEST(!find_cookie("a=1", ""));
}

BOOST_AUTO_TEST_CASE(removes_the_quotes_of_a_quoted_value) {
    BOOST_TEST(find_cookie("a=\"xyz\"; b=2", "a") == "xyz");
    BOOST_TEST(find_cookie("a=\"\"", "a") == "");
    BOOST_TEST(!find_cookie("a=\"x", "a"));
    BOOST_TEST(!find_cookie("a=\"x\"y\"", "a"));
}

BOOST_AUTO_TEST_CASE(the_first_of_a_repeated_name_wins) {
    BOOST_TEST(find_cookie("s=first; s=second", "s") == "first");
    // Even when it is malformed: a later one is not looked for.
    BOOST_TEST(!find_cookie("s=a\\b; s=second", "s"));
}

BOOST_AUTO_TEST_CASE(refuses_values_a_cookie_cannot_hold_and_skips_garbage) {
    BOOST_TEST(!find_cookie("a=x y", "a"));
    BOOST_TEST(!find_cookie("a=x,y", "a"));
    BOOST_TEST(!find_cookie("a=x\\y", "a"));
    BOOST_TEST(!find_cookie("a=\x01", "a"));
    BOOST_TEST(!find_cookie("a=\xc3\xa9", "a"));
    BOOST_TEST(find_cookie("garbage; ;;=; =x; a=1", "a") == "1");
    BOOST_TEST(!find_cookie(";;;;", "a"));
    BOOST_TEST(!find_cookie("====", "a"));
    BOOST_TEST(find_cookie(std::string("x\0y; a=1", 8), "a") == "1");
}

BOOST_AUTO_TEST_SUITE_END()
