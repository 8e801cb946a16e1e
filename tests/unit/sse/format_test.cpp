#include "sse/format.hpp"

#include <boost/json.hpp>
#include <boost/test/unit_test.hpp>

using namespace buzzer;
namespace json = boost::json;

namespace {

core::operation sample(core::status s) {
    core::operation op;
    op.id = "01JDB6Q6X8Z3M9J1V7QJ4T2N5K";
    op.kind = "echo";
    op.state = s;
    op.max_attempts = 3;
    op.created_at = 1'763'780'694'123;
    return op;
}

std::vector<std::string> hrefs(const std::string& data) {
    std::vector<std::string> out;
    const json::value v = json::parse(data);
    for (const auto& l : v.as_object().at("links").as_array())
        out.emplace_back(l.as_object().at("href").as_string());
    return out;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(format)

BOOST_AUTO_TEST_CASE(a_stored_state_gets_the_links_of_the_current_public_url) {
    auto op = sample(core::status::succeeded);
    core::event e{7, op.id, "completed", core::state_text(op)};
    BOOST_TEST(e.data.find("links") == std::string::npos);
    // The same as the representation the API renders, for any base URL.
    BOOST_TEST(sse::event_data(e, "") == core::represent_text(op, ""));
    BOOST_TEST(sse::event_data(e, "https://x.example") ==
               core::represent_text(op, "https://x.example"));
    BOOST_TEST(hrefs(sse::event_data(e, "")).back() == "/operations/" + op.id);
}

BOOST_AUTO_TEST_CASE(each_state_event_gets_the_links_of_its_state) {
    for (auto [type, state] :
         {std::pair{"pending", core::status::pending}, std::pair{"running", core::status::running},
          std::pair{"failed", core::status::failed},
          std::pair{"canceled", core::status::canceled}}) {
        auto op = sample(state);
        core::event e{1, op.id, type, core::state_text(op)};
        BOOST_TEST(sse::event_data(e, "") == core::represent_text(op, ""));
    }
}

BOOST_AUTO_TEST_CASE(rows_stored_with_their_links_and_progress_are_sent_as_they_are) {
    auto op = sample(core::status::running);
    core::event old{3, op.id, "running", core::represent_text(op, "http://old")};
    BOOST_TEST(sse::event_data(old, "http://new") == old.data);
    core::event progress{4, op.id, "progress", R"({"id":"x","percent":5,"message":"m"})"};
    BOOST_TEST(sse::event_data(progress, "http://new") == progress.data);
}

BOOST_AUTO_TEST_CASE(frames_have_id_type_and_one_data_line) {
    core::event e{42, "x", "progress", "{\"message\":\"a\nb\"}"};
    BOOST_TEST(sse::format_event(e, "") ==
               "id: 42\nevent: progress\ndata: {\"message\":\"a b\"}\n\n");
}

BOOST_AUTO_TEST_SUITE_END()
