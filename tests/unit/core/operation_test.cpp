#include "core/operation.hpp"

#include <boost/json.hpp>
#include <boost/test/unit_test.hpp>

using namespace buzzer::core;
namespace json = boost::json;

namespace {

operation sample(status s) {
    operation op;
    op.id = "01JDB6Q6X8Z3M9J1V7QJ4T2N5K";
    op.kind = "sleep";
    op.state = s;
    op.input = "{}";
    op.max_attempts = 3;
    op.attempt = 1;
    op.created_at = 1'763'780'694'123;
    return op;
}

std::vector<std::string> rels(const json::object& o) {
    std::vector<std::string> out;
    for (const auto& l : o.at("links").as_array())
        out.emplace_back(l.as_object().at("rel").as_string());
    return out;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(representation)

BOOST_AUTO_TEST_CASE(formats_times_as_rfc3339_with_milliseconds) {
    BOOST_TEST(format_time(1'763'780'694'123) == "2025-11-22T03:04:54.123Z");
    BOOST_TEST(format_time(0) == "1970-01-01T00:00:00.000Z");
}

BOOST_AUTO_TEST_CASE(pending_has_cancel_link_but_no_result) {
    auto o = represent(sample(status::pending), "");
    BOOST_TEST(o.at("status").as_string() == "pending");
    BOOST_TEST(o.at("progress").is_null());
    BOOST_TEST(o.at("finished_at").is_null());
    BOOST_TEST((rels(o) == std::vector<std::string>{"status_check", "status_stream", "cancel"}));
}

BOOST_AUTO_TEST_CASE(succeeded_has_result_link_and_no_cancel) {
    auto o = represent(sample(status::succeeded), "");
    BOOST_TEST((rels(o) == std::vector<std::string>{"status_check", "status_stream", "result"}));
    BOOST_TEST(o.at("links").as_array()[2].as_object().at("href").as_string() ==
               "/operations/01JDB6Q6X8Z3M9J1V7QJ4T2N5K");
}

BOOST_AUTO_TEST_CASE(public_url_makes_hrefs_absolute) {
    auto o = represent(sample(status::running), "https://api.example.com");
    BOOST_TEST(o.at("links").as_array()[0].as_object().at("href").as_string() ==
               "https://api.example.com/operations/01JDB6Q6X8Z3M9J1V7QJ4T2N5K/status");
}

BOOST_AUTO_TEST_CASE(whole_numbers_print_as_integers) {
    BOOST_TEST(json::serialize(json_number(60)) == "60");
    BOOST_TEST(json::serialize(json_number(0.5)) != "60");
    BOOST_TEST(json_number(0.5).is_double());
}

BOOST_AUTO_TEST_CASE(status_names_round_trip) {
    for (auto s :
         {status::pending, status::running, status::succeeded, status::failed, status::canceled})
        BOOST_TEST((parse_status(to_string(s)) == s));
    BOOST_TEST(!parse_status("done").has_value());
}

BOOST_AUTO_TEST_SUITE_END()
