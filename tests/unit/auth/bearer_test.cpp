#include "auth/bearer.hpp"

#include <boost/test/unit_test.hpp>
#include <string>
#include <vector>

using namespace buzzer::auth;

BOOST_AUTO_TEST_SUITE(bearer_header)

BOOST_AUTO_TEST_CASE(reads_the_token_of_a_bearer_header) {
    auto b = parse_authorization("Bearer bzk_abc123");
    BOOST_TEST(b.kind == bearer::token);
    BOOST_TEST(b.credential == "bzk_abc123");
    b = parse_authorization("Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln-_~+/==");
    BOOST_TEST(b.kind == bearer::token);
    BOOST_TEST(b.credential == "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln-_~+/==");
}

BOOST_AUTO_TEST_CASE(takes_the_scheme_in_any_case_and_several_spaces) {
    BOOST_TEST(parse_authorization("bearer abc").credential == "abc");
    BOOST_TEST(parse_authorization("BEARER abc").credential == "abc");
    BOOST_TEST(parse_authorization("BeArEr    abc").credential == "abc");
    BOOST_TEST(parse_authorization("  Bearer abc  ").credential == "abc");
    BOOST_TEST(parse_authorization("Bearer abc").kind == bearer::token);
}

BOOST_AUTO_TEST_CASE(refuses_other_schemes_and_empty_values) {
    for (std::string v : {"", " ", "Bearer", "Bearer ", "Bearer    ", "Basic dXNlcjpwYXNz",
                          "Bearerabc", "Bearer\tabc", "Token abc", "Bear abc", "abc"}) {
        auto b = parse_authorization(v);
        BOOST_TEST(b.kind == bearer::malformed, "'" << v << "'");
        BOOST_TEST(b.credential.empty());
    }
}

BOOST_AUTO_TEST_CASE(refuses_what_is_not_token68) {
    for (const std::string& v : std::vector<std::string>{
             "Bearer a b", "Bearer a,b", "Bearer a=b", "Bearer =abc", "Bearer abc;",
             "Bearer \"abc\"", "Bearer abc\x01", "Bearer ab\xc3\xa9", "Bearer a\tb",
             "Bearer abc==x", std::string("Bearer ab\0c", 11)})
        BOOST_TEST(parse_authorization(v).kind == bearer::malformed, "'" << v << "'");
    BOOST_TEST(parse_authorization("Bearer abc==").kind == bearer::token);
}

BOOST_AUTO_TEST_SUITE_END()
