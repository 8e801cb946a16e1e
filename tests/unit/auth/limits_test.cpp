#include "auth/limits.hpp"

#include <atomic>
#include <boost/test/unit_test.hpp>
#include <string>
#include <thread>
#include <vector>

#include "auth/quotas.hpp"

using namespace buzzer;
using namespace buzzer::auth;
using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

namespace {
// A fixed point in time, so that the tests do not depend on the clock.
const clock_type::time_point t0 = clock_type::time_point(1000h);
}  // namespace

BOOST_TEST_DONT_PRINT_LOG_VALUE(std::optional<std::string>)
BOOST_TEST_DONT_PRINT_LOG_VALUE(std::optional<int>)

BOOST_AUTO_TEST_SUITE(token_bucket_limit)

BOOST_AUTO_TEST_CASE(gives_the_burst_then_the_rate) {
    token_bucket b(2, 3);
    for (int i = 0; i < 3; ++i) BOOST_TEST(b.take(t0) == 0);
    const double wait = b.take(t0);
    BOOST_TEST(wait == 0.5, boost::test_tools::tolerance(1e-9));
    BOOST_TEST(b.take(t0 + 250ms) == 0.25, boost::test_tools::tolerance(1e-9));
    BOOST_TEST(b.take(t0 + 500ms) == 0);
    BOOST_TEST(b.take(t0 + 500ms) > 0);
    // Refilled to the burst and no further.
    for (int i = 0; i < 3; ++i) BOOST_TEST(b.take(t0 + 100s) == 0);
    BOOST_TEST(b.take(t0 + 100s) > 0);
}

BOOST_AUTO_TEST_CASE(a_time_before_the_last_refills_nothing) {
    token_bucket b(1, 1);
    BOOST_TEST(b.take(t0 + 10s) == 0);
    BOOST_TEST(b.take(t0) > 0);
    BOOST_TEST(b.take(t0 + 11s) == 0);
}

BOOST_AUTO_TEST_CASE(refuses_impossible_settings) {
    BOOST_CHECK_THROW(token_bucket(0, 1), std::invalid_argument);
    BOOST_CHECK_THROW(token_bucket(-1, 1), std::invalid_argument);
    BOOST_CHECK_THROW(token_bucket(1, 0.5), std::invalid_argument);
    BOOST_CHECK_THROW(token_bucket(std::numeric_limits<double>::quiet_NaN(), 1),
                      std::invalid_argument);
    BOOST_CHECK_THROW(token_bucket(1, std::numeric_limits<double>::infinity()),
                      std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(tokens_spent_elsewhere_are_owed_down_to_minus_the_burst) {
    token_bucket b(2, 4);
    b.debit(3, t0);
    BOOST_TEST(b.take(t0) == 0);  // 1 left
    BOOST_TEST(b.take(t0) > 0);
    b.debit(100, t0);  // owes 4 at most: 2 s at 2/s pay it back, 0.5 s more give one token
    BOOST_TEST(b.take(t0 + 1s) == 1.5, boost::test_tools::tolerance(1e-9));
    BOOST_TEST(b.take(t0 + 2500ms) == 0);
    b.debit(0, t0 + 2500ms);
    b.debit(-5, t0 + 2500ms);  // nothing to give back
    BOOST_TEST(b.take(t0 + 2500ms) > 0);
}

BOOST_AUTO_TEST_CASE(submit_rates_count_what_they_admit_and_take_what_others_did) {
    submit_rates rates;
    quota q;
    q.submit_rate = 1;
    q.submit_burst = 3;
    quota unlimited;
    for (int i = 0; i < 4; ++i) rates.take("acme", q, t0);  // 3 admitted, 1 refused
    rates.take("free", unlimited, t0);                      // no rate: not counted
    auto admitted = rates.take_admitted();
    BOOST_TEST_REQUIRE(admitted.size() == 1u);
    BOOST_TEST(admitted[0].first == "acme");
    BOOST_TEST(admitted[0].second == 3);
    BOOST_TEST(rates.take_admitted().empty());
    rates.restore_admitted(admitted);
    BOOST_TEST(rates.take_admitted().size() == 1u);
    // Two tokens back after 2 s, unless other nodes admitted two meanwhile.
    rates.debit("acme", 2, t0 + 2s);
    rates.debit("nobody", 2, t0 + 2s);  // no bucket here: nothing
    BOOST_TEST(rates.take("acme", q, t0 + 2s) > 0);
    BOOST_TEST(rates.take("acme", q, t0 + 3s) == 0);
}

BOOST_AUTO_TEST_CASE(threads_take_no_more_than_the_burst) {
    token_bucket b(1e-9, 1000);
    std::atomic<int> taken = 0;
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
        threads.emplace_back([&] {
            for (int i = 0; i < 500; ++i)
                if (b.take(t0) == 0) ++taken;
        });
    for (auto& t : threads) t.join();
    BOOST_TEST(taken.load() == 1000);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(failure_limit)

BOOST_AUTO_TEST_CASE(blocks_beyond_20_failures_in_a_second) {
    failure_limiter f;
    for (int i = 0; i < 20; ++i) {
        BOOST_TEST(f.blocked("10.0.0.1", t0 + i * 10ms) == 0);
        f.failed("10.0.0.1", t0 + i * 10ms);
    }
    BOOST_TEST(f.blocked("10.0.0.1", t0 + 200ms) == 0);
    f.failed("10.0.0.1", t0 + 200ms);
    // The 10 failures of the first tenth leave the second at t0 + 1 s: 0.8 s from now.
    BOOST_TEST(f.blocked("10.0.0.1", t0 + 200ms) == 0.8, boost::test_tools::tolerance(1e-9));
    // Another address is not affected.
    BOOST_TEST(f.blocked("10.0.0.2", t0 + 200ms) == 0);
    BOOST_TEST(f.blocked("10.0.0.1", t0 + 999ms) > 0);
    BOOST_TEST(f.blocked("10.0.0.1", t0 + 1000ms) == 0);
}

BOOST_AUTO_TEST_CASE(a_steady_rate_under_the_limit_is_never_blocked) {
    failure_limiter f(20);
    for (int i = 0; i < 200; ++i) {
        BOOST_TEST_REQUIRE(f.blocked("a", t0 + i * 60ms) == 0);
        f.failed("a", t0 + i * 60ms);
    }
}

BOOST_AUTO_TEST_CASE(an_address_whose_failures_faded_is_dropped) {
    failure_limiter f;
    for (int i = 0; i < 30; ++i) f.failed("a", t0);
    BOOST_TEST(f.blocked("a", t0 + 500ms) > 0);
    BOOST_TEST(f.size() == 1u);
    BOOST_TEST(f.blocked("a", t0 + 1100ms) == 0);
    BOOST_TEST(f.size() == 0u);
}

BOOST_AUTO_TEST_CASE(a_flood_of_addresses_stays_within_the_bound) {
    failure_limiter f(2, 100);
    for (int i = 0; i < 10'000; ++i) f.failed("192.0.2." + std::to_string(i), t0);
    BOOST_TEST(f.size() <= 100u);
    // The most recent addresses are the ones kept.
    for (int k = 0; k < 3; ++k) f.failed("192.0.2.9999", t0);
    BOOST_TEST(f.blocked("192.0.2.9999", t0) > 0);
    // Addresses whose failures faded make room first.
    for (int i = 0; i < 50; ++i) f.failed("198.51.100." + std::to_string(i), t0 + 2s);
    BOOST_TEST(f.size() == 50u);
}

BOOST_AUTO_TEST_CASE(threads_count_every_failure) {
    failure_limiter f(399);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
        threads.emplace_back([&] {
            for (int i = 0; i < 100; ++i) {
                f.failed("a", t0);
                f.blocked("b", t0);
            }
        });
    for (auto& t : threads) t.join();
    BOOST_TEST(f.blocked("a", t0) > 0);  // 400 > 399
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(credential_cache)

BOOST_AUTO_TEST_CASE(finds_what_was_put_until_it_expires) {
    verified_cache<std::string> c(10);
    c.put("h1", "acme", 1000);
    BOOST_TEST(c.find("h1", 999) == std::optional<std::string>("acme"));
    BOOST_TEST(!c.find("h2", 999));
    BOOST_TEST(!c.find("h1", 1000));
    BOOST_TEST(c.size() == 0u);  // the expired entry went
    c.put("h1", "acme", 1000);
    c.put("h1", "other", 2000);
    BOOST_TEST(c.find("h1", 1500) == std::optional<std::string>("other"));
    BOOST_TEST(c.size() == 1u);
}

BOOST_AUTO_TEST_CASE(evicts_the_least_recently_used_when_full) {
    verified_cache<int> c(3);
    c.put("a", 1, 100);
    c.put("b", 2, 100);
    c.put("c", 3, 100);
    BOOST_TEST(c.find("a", 0) == std::optional<int>(1));  // a is now the most recent
    c.put("d", 4, 100);
    BOOST_TEST(c.size() == 3u);
    BOOST_TEST(!c.find("b", 0));
    BOOST_TEST(c.find("a", 0).has_value());
    BOOST_TEST(c.find("c", 0).has_value());
    BOOST_TEST(c.find("d", 0).has_value());
    verified_cache<int> none(0);
    none.put("a", 1, 100);
    BOOST_TEST(!none.find("a", 0));
}

BOOST_AUTO_TEST_CASE(erases_the_entries_a_predicate_picks) {
    verified_cache<std::string> c(10);
    c.put("h1", "key_1", 100);
    c.put("h2", "key_2", 100);
    c.put("h3", "key_1", 100);
    c.erase_if([](const std::string& v) { return v == "key_1"; });
    BOOST_TEST(c.size() == 1u);
    BOOST_TEST(c.find("h2", 0).has_value());
    c.clear();
    BOOST_TEST(c.size() == 0u);
}

BOOST_AUTO_TEST_CASE(threads_share_one_cache) {
    verified_cache<int> c(64);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
        threads.emplace_back([&, t] {
            for (int i = 0; i < 2000; ++i) {
                const auto key = std::to_string((i * 7 + t) % 100);
                c.put(key, i, 1'000'000);
                (void)c.find(key, 0);
                if (i % 500 == 0) c.erase_if([](int v) { return v % 2 == 0; });
            }
        });
    for (auto& t : threads) t.join();
    BOOST_TEST(c.size() <= 64u);
}

BOOST_AUTO_TEST_SUITE_END()
