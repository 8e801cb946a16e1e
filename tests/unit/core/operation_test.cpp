#include "core/operation.hpp"

#include <boost/json.hpp>
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <limits>

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

// The representation as the client reads it.
json::object represent(const operation& op, std::string_view base_url) {
    return json::parse(represent_text(op, base_url)).as_object();
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
    BOOST_TEST(format_time(951'782'400'000) == "2000-02-29T00:00:00.000Z");
    BOOST_TEST(format_time(4'107'542'399'999) == "2100-02-28T23:59:59.999Z");
    BOOST_TEST(format_time(-1) == "1969-12-31T23:59:59.999Z");
    BOOST_TEST(format_time(253'402'300'799'999) == "9999-12-31T23:59:59.999Z");
}

BOOST_AUTO_TEST_CASE(formats_every_day_of_four_centuries_like_gmtime) {
    for (std::int64_t day = -146097; day < 2 * 146097; day += 1) {
        std::time_t secs = static_cast<std::time_t>(day * 86400 + 45296);  // 12:34:56
        std::tm tm{};
        gmtime_r(&secs, &tm);
        char want[40];
        std::snprintf(want, sizeof want, "%04d-%02d-%02dT12:34:56.789Z", tm.tm_year + 1900,
                      tm.tm_mon + 1, tm.tm_mday);
        if (format_time(secs * 1000LL + 789) != want) {
            BOOST_TEST(format_time(secs * 1000LL + 789) == want);
            break;
        }
    }
}

// The tenant decides who sees an operation; it is not part of what they see.
BOOST_AUTO_TEST_CASE(the_representation_does_not_show_the_tenant) {
    auto op = sample(status::pending);
    BOOST_TEST(op.tenant == default_tenant);
    op.tenant = "acme-tenant";
    const auto text = represent_text(op, "");
    BOOST_TEST(text.find("acme-tenant") == std::string::npos);
    BOOST_TEST(!represent(op, "").contains("tenant"));
    BOOST_TEST(state_text(op).find("acme-tenant") == std::string::npos);
    BOOST_TEST(queue_entry(op).tenant == "acme-tenant");
}

BOOST_AUTO_TEST_CASE(text_is_json_with_every_field_and_escaped_strings) {
    auto op = sample(status::failed);
    op.kind = "a \"quoted\"\\ kind\n\x01";
    op.timeout_s = 2.5;
    op.priority = -7;
    op.started_at = op.created_at + 5;
    op.finished_at = op.created_at + 9;
    op.progress = R"({"percent":40,"message":"step 2"})";
    op.error = canceled_problem(op.id);
    auto v = json::parse(represent_text(op, "http://h:1"));
    auto& o = v.as_object();
    BOOST_TEST(o.at("kind").as_string() == op.kind);
    BOOST_TEST(o.at("status").as_string() == "failed");
    BOOST_TEST(o.at("timeout_s").as_double() == 2.5);
    BOOST_TEST(o.at("priority").as_int64() == -7);
    BOOST_TEST(o.at("attempt").as_int64() == 1);
    BOOST_TEST(o.at("max_attempts").as_int64() == 3);
    BOOST_TEST(o.at("started_at").as_string() == "2025-11-22T03:04:54.128Z");
    BOOST_TEST(o.at("finished_at").as_string() == "2025-11-22T03:04:54.132Z");
    BOOST_TEST(o.at("progress").as_object().at("percent").as_int64() == 40);
    BOOST_TEST(o.at("error").as_object().at("type").as_string() == "/problems/canceled");
    BOOST_TEST((rels(o) == std::vector<std::string>{"status_check", "status_stream"}));
    BOOST_TEST(o.size() == 13u);
}

BOOST_AUTO_TEST_CASE(strings_are_escaped_as_boost_json_escapes_them) {
    // Every byte alone, then all of them in one string.
    std::string all;
    for (int c = 0; c < 256; ++c) {
        std::string one(1, static_cast<char>(c));
        all += one;
        std::string out;
        append_json_string(out, one);
        BOOST_TEST(out == json::serialize(json::string_view(one)), "byte " << c);
    }
    std::string out = "x";
    append_json_string(out, all);
    BOOST_TEST(out == "x" + json::serialize(json::string_view(all)));
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

BOOST_AUTO_TEST_CASE(numbers_are_written_as_people_write_them) {
    BOOST_TEST(number_text(60) == "60");
    BOOST_TEST(number_text(-3) == "-3");
    BOOST_TEST(number_text(0.5) == "0.5");
    BOOST_TEST(number_text(0.1 + 0.2) == "0.30000000000000004");
    BOOST_TEST(number_text(1e300) == "1e+300");
    BOOST_TEST(number_text(std::numeric_limits<double>::infinity()) == "null");
    BOOST_TEST(number_text(std::nan("")) == "null");
    // Each reads back as the same double.
    for (double v : {0.5, 1e-7, 123456.789, 1e300})
        BOOST_TEST(json::parse(number_text(v)).to_number<double>() == v);
}

BOOST_AUTO_TEST_CASE(values_serialize_compactly_with_plain_numbers) {
    auto v = json::parse(R"({"a": 0.25, "b": [1, -2, 18446744073709551615, "x\n"], "c": null,
                            "d": {"e": true, "f": 1.5e10}})");
    BOOST_TEST(
        to_json(v) ==
        R"({"a":0.25,"b":[1,-2,18446744073709551615,"x\n"],"c":null,"d":{"e":true,"f":15000000000}})");
    BOOST_TEST(json::parse(to_json(v)).at("d").at("f").to_number<double>() == 1.5e10);
}

BOOST_AUTO_TEST_CASE(canonical_text_is_the_same_for_equal_values) {
    auto a = json::parse(R"({"b": [1, {"y": 2.5, "x": "s"}], "a": 1.0})");
    auto b = json::parse(R"({"a": 1, "b": [1e0, {"x": "s", "y": 25e-1}]})");
    BOOST_TEST(canonical_json(a) == R"({"a":1,"b":[1,{"x":"s","y":2.5}]})");
    BOOST_TEST(canonical_json(a) == canonical_json(b));
    BOOST_TEST(same_json(a, b));
    // Text an older version stored for the same value.
    BOOST_TEST(same_json(json::parse(R"({"a":1,"b":[1,{"x":"s","y":2.5E0}]})"), a));
    BOOST_TEST(!same_json(a, json::parse(R"({"a": 1, "b": [1, {"x": "s", "y": 2.4}]})")));
    BOOST_TEST(!same_json(json::parse("[1]"), json::parse("[1, 2]")));
    BOOST_TEST(!same_json(json::parse(R"({"a": 1})"), json::parse(R"({"b": 1})")));
}
