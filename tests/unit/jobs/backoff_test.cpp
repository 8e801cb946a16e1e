#include "jobs/backoff.hpp"

#include <boost/test/unit_test.hpp>

using namespace buzzer::jobs;

BOOST_AUTO_TEST_SUITE(backoff)

BOOST_AUTO_TEST_CASE(ceiling_doubles_per_attempt) {
    BOOST_TEST(backoff_ceiling_ms(1, 1, 300) == 1000);
    BOOST_TEST(backoff_ceiling_ms(2, 1, 300) == 2000);
    BOOST_TEST(backoff_ceiling_ms(5, 1, 300) == 16000);
}

BOOST_AUTO_TEST_CASE(ceiling_is_capped) {
    BOOST_TEST(backoff_ceiling_ms(20, 1, 300) == 300000);
    BOOST_TEST(backoff_ceiling_ms(1000, 1, 300) == 300000);
}

BOOST_AUTO_TEST_CASE(full_jitter_stays_within_the_ceiling_and_varies) {
    std::int64_t lo = 1 << 30, hi = -1;
    for (int i = 0; i < 2000; ++i) {
        auto d = backoff_delay_ms(4, 1, 300);
        BOOST_TEST_REQUIRE(d >= 0);
        BOOST_TEST_REQUIRE(d <= 8000);
        lo = std::min(lo, d);
        hi = std::max(hi, d);
    }
    BOOST_TEST(lo < 1000);  // full jitter reaches down towards zero
    BOOST_TEST(hi > 7000);  // and up towards the ceiling
}

BOOST_AUTO_TEST_SUITE_END()
