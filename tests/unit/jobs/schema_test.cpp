#include "jobs/schema.hpp"

#include <boost/json.hpp>
#include <boost/test/unit_test.hpp>
#include <buzzer/server.hpp>

using buzzer::invalid_input;
using buzzer::jobs::input_schema;
namespace json = boost::json;

namespace {

input_schema thumbnail() {
    return input_schema::parse(json::parse(R"({
        "type": "object", "required": ["url"],
        "properties": {
            "url": {"type": "string", "maxLength": 20},
            "size": {"type": "integer", "minimum": 16, "maximum": 1024},
            "format": {"enum": ["png", "jpeg"]},
            "tags": {"type": "array", "items": {"type": "string"}}
        }})"),
                               "kinds.thumbnail.input");
}

std::string problem(const input_schema& s, const char* input) {
    try {
        s.check(json::parse(input));
        return "";
    } catch (const invalid_input& e) {
        return e.what();
    }
}

}  // namespace

BOOST_AUTO_TEST_SUITE(schema)

BOOST_AUTO_TEST_CASE(accepts_valid_input) {
    auto s = thumbnail();
    BOOST_TEST(problem(s, R"({"url": "http://x", "size": 64, "format": "png", "tags": ["a"]})") ==
               "");
    BOOST_TEST(problem(s, R"({"url": "http://x", "size": 64.0})") == "");
}

BOOST_AUTO_TEST_CASE(names_the_offending_path) {
    auto s = thumbnail();
    BOOST_TEST(problem(s, R"({})") == "input.url is required");
    BOOST_TEST(problem(s, R"([])") == "input must be an object");
    BOOST_TEST(problem(s, R"({"url": 3})") == "input.url must be a string");
    BOOST_TEST(problem(s, R"({"url": "x", "size": 8})") == "input.size must be at least 16");
    BOOST_TEST(problem(s, R"({"url": "x", "size": 2000})") == "input.size must be at most 1024");
    BOOST_TEST(problem(s, R"({"url": "x", "size": 17.5})") == "input.size must be an integer");
    BOOST_TEST(problem(s, R"({"url": "x", "format": "gif"})") ==
               R"(input.format must be one of ["png","jpeg"])");
    BOOST_TEST(problem(s, R"({"url": "x", "tags": ["a", 2]})") == "input.tags[1] must be a string");
    BOOST_TEST(problem(s, R"({"url": "0123456789012345678901"})") ==
               "input.url must be at most 20 characters long");
}

BOOST_AUTO_TEST_CASE(required_members_are_missing_from_a_missing_input) {
    // As in the contract's example: `required` without `"type": "object"`.
    auto s = input_schema::parse(
        json::parse(R"({"required": ["url"], "properties": {"url": {"type": "string"}}})"),
        "kinds.thumbnail.input");
    BOOST_TEST(problem(s, "null") == "input.url is required");
    BOOST_TEST(problem(s, R"("http://x")") == "input must be an object");
    BOOST_TEST(problem(s, R"({"url": "http://x"})") == "");
    // Without `required`, a missing input passes.
    auto optional = input_schema::parse(
        json::parse(R"({"properties": {"url": {"type": "string"}}})"), "kinds.k.input");
    BOOST_TEST(problem(optional, "null") == "");
}

BOOST_AUTO_TEST_CASE(enum_compares_numbers_by_value) {
    auto s = input_schema::parse(json::parse(R"({"enum": [1, 2.5, "x"]})"), "kinds.k.input");
    BOOST_TEST(problem(s, "1.0") == "");
    BOOST_TEST(problem(s, "1e0") == "");
    BOOST_TEST(problem(s, "2.5") == "");
    BOOST_TEST(problem(s, "3") == R"(input must be one of [1,2.5,"x"])");
}

BOOST_AUTO_TEST_CASE(counts_characters_not_bytes) {
    auto s = input_schema::parse(json::parse(R"({"type": "string", "maxLength": 3})"), "x");
    BOOST_TEST(problem(s, R"("äöü")") == "");
    BOOST_TEST(problem(s, R"("äöüß")") != "");
}

BOOST_AUTO_TEST_CASE(takes_limits_beyond_every_machine_integer) {
    auto s = input_schema::parse(json::parse(R"({"type": "string", "maxLength": 1e30})"), "x");
    BOOST_TEST(problem(s, R"("long enough")") == "");
    auto t = input_schema::parse(json::parse(R"({"type": "string", "maxLength": 2.0})"), "x");
    BOOST_TEST(problem(t, R"("abc")").starts_with("input must be at most 2"));
}

BOOST_AUTO_TEST_CASE(rejects_unknown_keywords_and_bad_values) {
    auto bad = [](const char* text) {
        try {
            input_schema::parse(json::parse(text), "kinds.k.input");
            return std::string();
        } catch (const std::invalid_argument& e) {
            return std::string(e.what());
        }
    };
    BOOST_TEST(bad(R"({"pattern": "x"})").starts_with("kinds.k.input.pattern: unsupported"));
    BOOST_TEST(bad(R"({"type": "text"})") == "kinds.k.input.type: unknown type text");
    BOOST_TEST(bad(R"({"properties": {"a": {"type": 3}}})")
                   .starts_with("kinds.k.input.properties.a.type"));
    BOOST_TEST(bad(R"({"required": "url"})").starts_with("kinds.k.input.required"));
    BOOST_TEST(bad(R"(3)") == "kinds.k.input: a schema must be an object");
}

BOOST_AUTO_TEST_SUITE_END()
