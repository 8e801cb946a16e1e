#include "auth/api_key.hpp"

#include <array>
#include <boost/test/unit_test.hpp>
#include <set>
#include <string>

using namespace buzzer::auth;

namespace {
constexpr std::string_view base62 =
    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
}

BOOST_AUTO_TEST_SUITE(api_key)

BOOST_AUTO_TEST_CASE(a_key_is_bzk_and_base62_with_256_bits) {
    const auto k = generate_api_key();
    BOOST_TEST(k.text.starts_with("bzk_"));
    BOOST_TEST(k.text.size() == 47u);  // 43 base62 characters carry 256 bits
    BOOST_TEST(k.text.substr(4).find_first_not_of(base62) == std::string::npos);
    BOOST_TEST(looks_like_api_key(k.text));
    BOOST_TEST(k.hash == hash_api_key(k.text));
}

BOOST_AUTO_TEST_CASE(an_id_is_key_and_20_base62_characters_apart_from_the_secret) {
    const auto k = generate_api_key();
    BOOST_TEST(k.id.starts_with("key_"));
    BOOST_TEST(k.id.size() == 24u);
    BOOST_TEST(k.id.substr(4).find_first_not_of(base62) == std::string::npos);
    BOOST_TEST(k.text.find(k.id.substr(4)) == std::string::npos);
}

BOOST_AUTO_TEST_CASE(keys_and_ids_do_not_repeat) {
    std::set<std::string> texts, ids;
    for (int i = 0; i < 2000; ++i) {
        auto k = generate_api_key();
        texts.insert(k.text);
        ids.insert(k.id);
    }
    BOOST_TEST(texts.size() == 2000u);
    BOOST_TEST(ids.size() == 2000u);
}

BOOST_AUTO_TEST_CASE(every_character_is_about_equally_likely) {
    // 2000 keys: 86,000 characters, about 1387 of each. Modulo bias (256 % 62 = 8 favoured
    // characters) would give those about 1.26 times as many; the bound allows 5 sigma.
    std::array<int, 128> counts{};
    for (int i = 0; i < 2000; ++i)
        for (char c : generate_api_key().text.substr(4)) ++counts[static_cast<unsigned char>(c)];
    for (char c : base62) {
        BOOST_TEST(counts[static_cast<unsigned char>(c)] > 1387 - 190, c);
        BOOST_TEST(counts[static_cast<unsigned char>(c)] < 1387 + 190, c);
    }
}

BOOST_AUTO_TEST_CASE(the_hash_is_lowercase_hex_sha_256) {
    BOOST_TEST(hash_api_key("") ==
               "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    BOOST_TEST(hash_api_key("abc") ==
               "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

BOOST_AUTO_TEST_CASE(tells_key_shapes_apart) {
    const std::string ok = "bzk_" + std::string(36, 'a');
    BOOST_TEST(looks_like_api_key(ok));
    BOOST_TEST(!looks_like_api_key(ok.substr(0, 39)));
    BOOST_TEST(!looks_like_api_key("bzk_" + std::string(125, 'a')));
    BOOST_TEST(!looks_like_api_key("bzx_" + std::string(36, 'a')));
    BOOST_TEST(!looks_like_api_key("BZK_" + std::string(36, 'a')));
    BOOST_TEST(!looks_like_api_key("bzk_" + std::string(35, 'a') + "-"));
    BOOST_TEST(!looks_like_api_key("bzk_" + std::string(35, 'a') + "_"));
    BOOST_TEST(!looks_like_api_key("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlc2ln"));
    BOOST_TEST(!looks_like_api_key(""));
}

BOOST_AUTO_TEST_CASE(compares_hashes) {
    const auto h = hash_api_key("bzk_x");
    BOOST_TEST(same_hash(h, hash_api_key("bzk_x")));
    BOOST_TEST(!same_hash(h, hash_api_key("bzk_y")));
    BOOST_TEST(!same_hash(h, h.substr(0, 63)));
    BOOST_TEST(!same_hash(h, ""));
    BOOST_TEST(same_hash("", ""));
}

BOOST_AUTO_TEST_CASE(random_secrets_have_the_size_asked_for) {
    BOOST_TEST(random_secret(0).empty());
    const auto a = random_secret(32);
    const auto b = random_secret(32);
    BOOST_TEST(a.size() == 32u);
    BOOST_TEST(a != b);
    BOOST_TEST(random_secret(1000).size() == 1000u);
}

BOOST_AUTO_TEST_SUITE_END()
