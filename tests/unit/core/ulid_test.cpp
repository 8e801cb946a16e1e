#include "core/ulid.hpp"

#include <boost/test/unit_test.hpp>
#include <set>

using namespace buzzer::core;

BOOST_AUTO_TEST_SUITE(ulid)

BOOST_AUTO_TEST_CASE(has_26_crockford_characters) {
    auto id = make_ulid(now_ms());
    BOOST_TEST(id.size() == 26u);
    BOOST_TEST(is_ulid(id));
    BOOST_TEST(id.find_first_not_of("0123456789ABCDEFGHJKMNPQRSTVWXYZ") == std::string::npos);
}

BOOST_AUTO_TEST_CASE(encodes_the_timestamp) {
    millis t = 1'763'780'694'123;
    BOOST_TEST(ulid_time(make_ulid(t)) == t);
    BOOST_TEST(make_ulid(0).substr(0, 10) == "0000000000");
    // The example of the ULID specification: 1469918176385 ms is 01ARYZ6S41.
    BOOST_TEST(make_ulid(1'469'918'176'385).substr(0, 10) == "01ARYZ6S41");
    // The largest time: 48 bits set, the first character holding only 3 of them.
    BOOST_TEST(make_ulid(0xffffffffffff).substr(0, 10) == "7ZZZZZZZZZ");
}

BOOST_AUTO_TEST_CASE(sorts_by_time) {
    BOOST_TEST(make_ulid(1000) < make_ulid(1001));
    BOOST_TEST(make_ulid(1'700'000'000'000) < make_ulid(1'800'000'000'000));
}

BOOST_AUTO_TEST_CASE(random_part_differs_within_one_millisecond) {
    std::set<std::string> seen;
    for (int i = 0; i < 1000; ++i) seen.insert(make_ulid(42));
    BOOST_TEST(seen.size() == 1000u);
}

BOOST_AUTO_TEST_CASE(rejects_malformed_ids) {
    BOOST_TEST(!is_ulid(""));
    BOOST_TEST(!is_ulid("01JDB6Q6X8Z3M9J1V7QJ4T2N5"));    // 25 characters
    BOOST_TEST(!is_ulid("01JDB6Q6X8Z3M9J1V7QJ4T2N5KK"));  // 27 characters
    BOOST_TEST(!is_ulid("01JDB6Q6X8Z3M9J1V7QJ4T2N5I"));   // I is not Crockford
    BOOST_TEST(!is_ulid("01jdb6q6x8z3m9j1v7qj4t2n5k"));   // lower case
    BOOST_TEST(!is_ulid("81JDB6Q6X8Z3M9J1V7QJ4T2N5K"));   // overflows 128 bits
    BOOST_TEST(!is_ulid("../../../../etc/passwd00000"));
    BOOST_TEST(is_ulid("01JDB6Q6X8Z3M9J1V7QJ4T2N5K"));
}

BOOST_AUTO_TEST_CASE(ids_of_one_millisecond_increase_strictly) {
    const millis t = 1'763'780'694'123;
    std::string previous = make_ulid(t);
    for (int i = 0; i < 10'000; ++i) {
        auto next = make_ulid(t);
        BOOST_TEST_REQUIRE(next > previous);
        BOOST_TEST_REQUIRE(ulid_time(next) == t);
        previous = next;
    }
}

BOOST_AUTO_TEST_CASE(neighbours_in_one_millisecond_differ_in_their_upper_random_bits) {
    // Each step is 64 random bits, which reach into the first 6 characters of the random part
    // (its top 30 bits: characters 10 to 15) nearly always; a counter, or a step of at most
    // 2^48, leaves those characters as they were.
    const millis t = 1'763'780'694'321;
    std::string previous = make_ulid(t);
    int same_top = 0;
    for (int i = 0; i < 1'000; ++i) {
        auto next = make_ulid(t);
        if (next.substr(10, 6) == previous.substr(10, 6)) ++same_top;
        previous = next;
    }
    BOOST_TEST(same_top < 5);
}

BOOST_AUTO_TEST_SUITE_END()
