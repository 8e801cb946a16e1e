#include "http/router.hpp"

#include <boost/test/unit_test.hpp>

using namespace buzzer::http;

namespace {

router sample() {
    router r;
    handler h = [](request&) -> boost::asio::awaitable<response> { co_return response{}; };
    r.add("GET", "/operations", h);
    r.add("POST", "/operations", h);
    r.add("GET", "/operations/{id}/status", h);
    r.add("GET", "/operations/{id}", h);
    r.add("DELETE", "/operations/{id}", h);
    r.add("POST", "/operations/{id}/cancel", h);
    r.add("GET", "/", h);
    return r;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(routing)

BOOST_AUTO_TEST_CASE(captures_parameters) {
    auto r = sample();
    auto m = r.find("GET", "/operations/ABC/status");
    BOOST_TEST(m.target != nullptr);
    BOOST_TEST(m.params.size() == 1u);
    BOOST_TEST(m.params[0] == "ABC");
}

BOOST_AUTO_TEST_CASE(unknown_path_is_not_found) {
    auto r = sample();
    auto m = r.find("GET", "/nope");
    BOOST_TEST(m.target == nullptr);
    BOOST_TEST(m.allow.empty());
    BOOST_TEST(r.find("GET", "/operations/ABC/status/extra").target == nullptr);
    BOOST_TEST(r.find("GET", "/operations//status").target == nullptr);
    BOOST_TEST(r.find("GET", "operations").target == nullptr);
}

BOOST_AUTO_TEST_CASE(wrong_method_lists_allowed_ones) {
    auto r = sample();
    auto m = r.find("PUT", "/operations/ABC");
    BOOST_TEST(m.target == nullptr);
    BOOST_TEST(m.allow == "GET, HEAD, DELETE");
    BOOST_TEST(r.find("DELETE", "/operations").allow == "GET, HEAD, POST");
}

BOOST_AUTO_TEST_CASE(head_is_served_by_get_routes) {
    auto r = sample();
    BOOST_TEST(r.find("HEAD", "/").target != nullptr);
}

BOOST_AUTO_TEST_CASE(splits_paths) {
    BOOST_TEST(split_path("/").size() == 1u);
    BOOST_TEST(split_path("/a/b/").size() == 3u);
    BOOST_TEST(split_path("").empty());
}

BOOST_AUTO_TEST_SUITE_END()
