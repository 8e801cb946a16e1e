#include <boost/json.hpp>
#include <boost/test/unit_test.hpp>

#include "jobs/kinds.hpp"

using namespace buzzer;
namespace json = boost::json;

namespace {

bool accepted(const char* kind, const char* input) {
    jobs::kind_registry r;
    jobs::add_builtin_kinds(r);
    try {
        r.find(kind)->check(json::parse(input));
        return true;
    } catch (const invalid_input&) {
        return false;
    }
}

}  // namespace

BOOST_AUTO_TEST_SUITE(builtin_kinds)

BOOST_AUTO_TEST_CASE(registers_sleep_echo_fail) {
    jobs::kind_registry r;
    jobs::add_builtin_kinds(r);
    BOOST_TEST(r.all().size() == 3u);
    BOOST_TEST(r.find("sleep") != nullptr);
    BOOST_TEST(r.find("echo") != nullptr);
    BOOST_TEST(r.find("fail") != nullptr);
    BOOST_TEST(r.find("nope") == nullptr);
}

BOOST_AUTO_TEST_CASE(sleep_checks_its_ranges) {
    BOOST_TEST(accepted("sleep", "null"));
    BOOST_TEST(accepted("sleep", R"({"seconds": 0.5, "steps": 10})"));
    BOOST_TEST(accepted("sleep", R"({"seconds": 3600, "steps": 1000})"));
    BOOST_TEST(!accepted("sleep", R"({"seconds": -1})"));
    BOOST_TEST(!accepted("sleep", R"({"seconds": 3601})"));
    BOOST_TEST(!accepted("sleep", R"({"seconds": "1"})"));
    BOOST_TEST(!accepted("sleep", R"({"steps": 0})"));
    BOOST_TEST(!accepted("sleep", R"({"steps": 1001})"));
    BOOST_TEST(!accepted("sleep", R"({"steps": 2.5})"));
    BOOST_TEST(!accepted("sleep", R"([1, 2])"));
}

BOOST_AUTO_TEST_CASE(fail_checks_its_fields) {
    BOOST_TEST(accepted("fail", R"({"message": "x", "fail_attempts": 2})"));
    BOOST_TEST(!accepted("fail", R"({"message": 3})"));
    BOOST_TEST(!accepted("fail", R"({"fail_attempts": -1})"));
}

BOOST_AUTO_TEST_SUITE_END()
