#include "api/fields.hpp"

#include <boost/test/unit_test.hpp>
#include <limits>

using namespace buzzer;
using api::query_params;

namespace {

int status_of(auto&& f) {
    try {
        f();
    } catch (const http::http_error& e) {
        return e.status;
    }
    return 0;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(fields)

BOOST_AUTO_TEST_CASE(query_strings_decode_in_order) {
    auto q = api::parse_query("status=pending&kind=a%20b&flag&kind=c+d");
    BOOST_TEST(q.size() == 4u);
    BOOST_TEST(q[1].second == "a b");
    BOOST_TEST(q[2].first == "flag");
    BOOST_TEST(q[2].second == "");
    BOOST_TEST(q[3].second == "c d");
    BOOST_TEST(status_of([] { api::parse_query("a=%zz"); }) == 400);
    BOOST_TEST(api::parse_query("").empty());
}

BOOST_AUTO_TEST_CASE(waits_clamp_to_a_minute) {
    BOOST_TEST(api::parse_wait("5").value() == 5);
    BOOST_TEST(api::parse_wait("-3").value() == 0);
    BOOST_TEST(api::parse_wait("000000000000000000000000007").value() == 7);
    BOOST_TEST(api::parse_wait("99999999999999999999999").value() == 60);
    BOOST_TEST(!api::parse_wait("1.5"));
    BOOST_TEST(!api::parse_wait("-"));
    BOOST_TEST(api::wait_parameter(api::parse_query("wait=3&wait=9")) == 9);
    BOOST_TEST(status_of([] { api::wait_parameter(api::parse_query("wait=soon")); }) == 400);

    std::vector<http::field> headers{{"Prefer", "respond-async, wait=x"},
                                     {"PREFER", "handling=lenient; a=b, WAIT=\"12\""}};
    BOOST_TEST(api::preferred_wait(headers).value() == 12);
    BOOST_TEST(!api::preferred_wait({{"Prefer", "respond-async"}}));
}

BOOST_AUTO_TEST_CASE(idempotency_keys_are_visible_ascii_bare_or_quoted) {
    BOOST_TEST(api::parse_idempotency_key("abc-123") == "abc-123");
    BOOST_TEST(api::parse_idempotency_key(R"("a\"b\\c")") == R"(a"b\c)");
    BOOST_TEST(api::parse_idempotency_key(std::string(255, 'k')).size() == 255u);
    for (std::string bad :
         {std::string(), std::string(256, 'k'), std::string("a b"), std::string("\"\""),
          std::string(R"("a\x")"), std::string("caf\xc3\xa9")})
        BOOST_TEST(status_of([&] { api::parse_idempotency_key(bad); }) == 400, bad);
}

BOOST_AUTO_TEST_CASE(streams_resume_after_the_header_then_the_query) {
    auto q = api::parse_query("last_event_id=7");
    BOOST_TEST(api::resume_after(std::nullopt, q) == 7);
    BOOST_TEST(api::resume_after("9", q) == 9);
    BOOST_TEST(api::resume_after("-4", q) == 0);
    BOOST_TEST(api::resume_after("garbage", q) == 0);
    BOOST_TEST(api::resume_after("99999999999999999999999", {}) ==
               std::numeric_limits<std::int64_t>::max());
    BOOST_TEST(api::resume_after(std::nullopt, {}) == 0);
}

BOOST_AUTO_TEST_CASE(event_streams_name_one_to_a_hundred_operations) {
    auto ids = api::stream_operations(api::parse_query("operation=a&x=1&operation=b&operation=a"));
    BOOST_TEST(ids.size() == 2u);
    BOOST_TEST(status_of([] { api::stream_operations({}); }) == 400);
    query_params many;
    for (int i = 0; i < 101; ++i) many.emplace_back("operation", "same");
    BOOST_TEST(status_of([&] { api::stream_operations(many); }) == 400);
}

BOOST_AUTO_TEST_CASE(accept_headers_weigh_event_streams_against_json) {
    BOOST_TEST(api::accepts_event_stream("text/event-stream"));
    BOOST_TEST(api::accepts_event_stream("application/json;q=0.5, text/event-stream"));
    BOOST_TEST(!api::accepts_event_stream("application/json, text/event-stream;q=0.9"));
    BOOST_TEST(!api::accepts_event_stream("text/event-stream;q=0"));
    BOOST_TEST(!api::accepts_event_stream("text/event-stream;q=2"));
    BOOST_TEST(!api::accepts_event_stream("*/*"));
    BOOST_TEST(!api::accepts_event_stream(""));
}

BOOST_AUTO_TEST_CASE(list_filters_read_back_from_the_next_page_link) {
    auto f = api::parse_list_filter(
        api::parse_query("status=pending&status=running&kind=a%26b%20c&limit=7&other=1"));
    BOOST_TEST(f.statuses.size() == 2u);
    BOOST_TEST(f.kind.value() == "a&b c");
    BOOST_TEST(f.limit == 7);
    const std::string last = "01JDB6Q6X8Z3M9J1V7QJ4T2N5K";
    auto again = api::parse_list_filter(api::parse_query(api::next_page_query(f, last)));
    BOOST_TEST((again.statuses == f.statuses));
    BOOST_TEST(again.kind.value() == f.kind.value());
    BOOST_TEST(again.limit == 7);
    BOOST_TEST(again.before.value() == last);
    for (const char* bad : {"status=lost", "limit=0", "limit=501", "limit=x", "before=nope"})
        BOOST_TEST(status_of([&] { api::parse_list_filter(api::parse_query(bad)); }) == 400, bad);
}

BOOST_AUTO_TEST_SUITE_END()
