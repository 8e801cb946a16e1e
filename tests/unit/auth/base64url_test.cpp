#include "auth/base64url.hpp"

#include <boost/test/unit_test.hpp>
#include <string>

using namespace buzzer::auth;

BOOST_AUTO_TEST_SUITE(base64url)

BOOST_AUTO_TEST_CASE(encodes_the_rfc_4648_vectors_without_padding) {
    BOOST_TEST(base64url_encode("") == "");
    BOOST_TEST(base64url_encode("f") == "Zg");
    BOOST_TEST(base64url_encode("fo") == "Zm8");
    BOOST_TEST(base64url_encode("foo") == "Zm9v");
    BOOST_TEST(base64url_encode("foob") == "Zm9vYg");
    BOOST_TEST(base64url_encode("fooba") == "Zm9vYmE");
    BOOST_TEST(base64url_encode("foobar") == "Zm9vYmFy");
    // The two characters that differ from base64: 62 is '-', 63 is '_'.
    BOOST_TEST(base64url_encode("\xfb\xff\xbf") == "-_-_");
}

BOOST_AUTO_TEST_CASE(decodes_what_it_encodes) {
    std::string all;
    for (int i = 0; i < 256; ++i) all += static_cast<char>(i);
    for (std::size_t n = 0; n <= all.size(); n += 7) {
        const auto bytes = all.substr(0, n);
        const auto back = base64url_decode(base64url_encode(bytes));
        BOOST_TEST_REQUIRE(back.has_value());
        BOOST_TEST(*back == bytes);
    }
    BOOST_TEST(*base64url_decode("Zm9vYmFy") == "foobar");
    BOOST_TEST(*base64url_decode("") == "");
}

BOOST_AUTO_TEST_CASE(refuses_padding_and_characters_outside_the_alphabet) {
    BOOST_TEST(!base64url_decode("Zg=="));
    BOOST_TEST(!base64url_decode("Zm8="));
    BOOST_TEST(!base64url_decode("Zm9v+g"));  // '+' is base64, not base64url
    BOOST_TEST(!base64url_decode("Zm9v/g"));
    BOOST_TEST(!base64url_decode("Zm9 v"));
    BOOST_TEST(!base64url_decode("Zm9v\n"));
    BOOST_TEST(!base64url_decode(std::string("Zm\0v", 4)));
    BOOST_TEST(!base64url_decode("Zm9v\xc3\xa9"));
}

BOOST_AUTO_TEST_CASE(refuses_impossible_lengths_and_trailing_bits) {
    BOOST_TEST(!base64url_decode("Z"));      // 6 bits: not a byte
    BOOST_TEST(!base64url_decode("Zm9vY"));  // 4n + 1
    BOOST_TEST(!base64url_decode("Zh"));     // "f" is Zg: the low 4 bits of 'h' are not zero
    BOOST_TEST(!base64url_decode("Zm9"));    // "fo" is Zm8: the low 2 bits of '9' are not zero
    BOOST_TEST(base64url_decode("Zg").has_value());
    BOOST_TEST(base64url_decode("Zm8").has_value());
}

BOOST_AUTO_TEST_SUITE_END()
