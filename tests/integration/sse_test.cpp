#define BOOST_TEST_MODULE integration_sse
#include <boost/test/unit_test.hpp>
#include <map>

#include "integration/common.hpp"
#include "support/sse_client.hpp"

using namespace buzzer::test;
namespace json = boost::json;
using namespace std::chrono_literals;

namespace {

struct server_fixture {
    server_process server{
        server_options{.args = {"--sse-heartbeat", "0.3", "--sse-retry-ms", "1500"}}};
    http_client client{server.port()};
};

std::vector<std::string> types_of(const std::vector<sse_event>& events) {
    std::vector<std::string> out;
    for (const auto& e : events) out.push_back(e.type);
    return out;
}

}  // namespace

BOOST_FIXTURE_TEST_SUITE(event_stream, server_fixture)

BOOST_AUTO_TEST_CASE(streams_every_state_and_ends_after_the_terminal_event) {
    auto id = submit(client, R"({"kind":"sleep","input":{"seconds":0.6,"steps":3}})");
    sse_stream s(server.port(), "/operations/" + id + "/status");
    BOOST_TEST(s.status() == 200);
    BOOST_TEST(s.header("Content-Type").starts_with("text/event-stream"));
    BOOST_TEST(s.header("Cache-Control") == "no-store");
    BOOST_TEST(s.header("X-Accel-Buffering") == "no");
    BOOST_TEST(s.header("Vary").find("Accept") != std::string::npos);
    auto events = s.read_until_end(15s);
    BOOST_TEST(s.ended());
    BOOST_TEST(s.retry().value_or(0) == 1500u);
    BOOST_TEST(s.raw_text().starts_with("retry: 1500"));
    BOOST_TEST((types_of(events) == std::vector<std::string>{"pending", "running", "progress",
                                                             "progress", "progress", "completed"}));
    std::int64_t prev = 0;
    for (const auto& e : events) {
        BOOST_TEST_REQUIRE(e.id.has_value());
        auto seq = std::stoll(*e.id);
        BOOST_TEST(seq > prev);
        prev = seq;
        BOOST_TEST(e.data.find('\n') == std::string::npos);
        auto data = json::parse(e.data).as_object();
        BOOST_TEST(data.at("id").as_string() == id);
    }
    auto progress = json::parse(events[2].data).as_object();
    BOOST_TEST(progress.at("percent").as_int64() == 33);
    BOOST_TEST(progress.at("message").as_string() == "step 1 of 3");
    auto done = json::parse(events.back().data).as_object();
    BOOST_TEST(done.at("status").as_string() == "succeeded");
    bool has_result = false;
    for (const auto& l : done.at("links").as_array())
        has_result |= l.as_object().at("rel").as_string() == "result";
    BOOST_TEST(has_result);

    // At or past the terminal event: 204, EventSource stops.
    sse_stream after(server.port(), "/operations/" + id + "/status", *events.back().id);
    BOOST_TEST(after.status() == 204);
    sse_stream beyond(server.port(), "/operations/" + id + "/status", "999999999");
    BOOST_TEST(beyond.status() == 204);
}

BOOST_AUTO_TEST_CASE(last_event_id_replays_exactly_what_followed) {
    auto id = submit(client, R"({"kind":"sleep","input":{"seconds":0.4,"steps":2}})");
    wait_for_status(client, id, "succeeded");
    sse_stream all(server.port(), "/operations/" + id + "/status");
    auto events = all.read_until_end(10s);
    BOOST_TEST_REQUIRE(events.size() == 5u);
    sse_stream resumed(server.port(), "/operations/" + id + "/status", *events[1].id);
    auto rest = resumed.read_until_end(10s);
    BOOST_TEST_REQUIRE(rest.size() == 3u);
    for (std::size_t i = 0; i < 3; ++i) BOOST_TEST(*rest[i].id == *events[i + 2].id);
    // The query parameter does the same for a first connection; the header wins over it.
    sse_stream by_query(server.port(),
                        "/operations/" + id + "/status?last_event_id=" + *events[2].id);
    BOOST_TEST(by_query.read_until_end(10s).size() == 2u);
    sse_stream both(server.port(), "/operations/" + id + "/status?last_event_id=" + *events[0].id,
                    *events[3].id);
    BOOST_TEST(both.read_until_end(10s).size() == 1u);
}

BOOST_AUTO_TEST_CASE(unparsable_last_event_id_replays_from_the_start) {
    auto id = submit(client, R"({"kind":"echo","input":1})");
    wait_for_status(client, id, "succeeded");
    for (std::string bad : {"abc", "-5", "", "1e3"}) {
        sse_stream s(server.port(), "/operations/" + id + "/status", bad);
        BOOST_TEST(s.status() == 200);
        auto events = s.read_until_end(10s);
        BOOST_TEST_REQUIRE(!events.empty());
        BOOST_TEST(events.front().type == "pending");
        BOOST_TEST(events.back().type == "completed");
    }
}

BOOST_AUTO_TEST_CASE(unknown_operation_is_404) {
    sse_stream s(server.port(), "/operations/01JDB6Q6X8Z3M9J1V7QJ4T2N5K/status");
    BOOST_TEST(s.status() == 404);
    sse_stream bad(server.port(), "/operations/nope/status");
    BOOST_TEST(bad.status() == 404);
}

BOOST_AUTO_TEST_CASE(idle_streams_get_keepalive_comments) {
    auto id = submit(client, R"({"kind":"sleep","input":{"seconds":30}})");
    sse_stream s(server.port(), "/operations/" + id + "/status");
    bool got = wait_until(
        [&] {
            s.next_event(100ms);
            return s.comments() >= 2;
        },
        10s);
    BOOST_TEST(got);
    BOOST_TEST(s.last_comment() == "keepalive");
    client.post_json("/operations/" + id + "/cancel", "");
    auto rest = s.read_until_end(10s);
    BOOST_TEST_REQUIRE(!rest.empty());
    BOOST_TEST(rest.back().type == "canceled");
    BOOST_TEST(s.ended());
}

BOOST_AUTO_TEST_CASE(one_stream_follows_many_operations) {
    auto a = submit(client, R"({"kind":"echo","input":"a"})");
    auto b = submit(client, R"({"kind":"sleep","input":{"seconds":0.5}})");
    auto c = submit(client, R"({"kind":"fail","max_attempts":1})");
    sse_stream s(server.port(), "/events?operation=" + a + "&operation=" + b + "&operation=" + c);
    BOOST_TEST(s.status() == 200);
    auto events = s.read_until_end(15s);
    BOOST_TEST(s.ended());
    std::map<std::string, std::string> last;
    std::int64_t prev = 0;
    for (const auto& e : events) {
        auto seq = std::stoll(*e.id);
        BOOST_TEST(seq > prev);
        prev = seq;
        last[std::string(json::parse(e.data).as_object().at("id").as_string())] = e.type;
    }
    BOOST_TEST(last[a] == "completed");
    BOOST_TEST(last[b] == "completed");
    BOOST_TEST(last[c] == "failed");
    sse_stream after(server.port(),
                     "/events?operation=" + a + "&operation=" + b + "&operation=" + c,
                     std::to_string(prev));
    BOOST_TEST(after.status() == 204);
}

BOOST_AUTO_TEST_CASE(a_vanished_client_releases_its_stream) {
    auto id = submit(client, R"({"kind":"sleep","input":{"seconds":30}})");
    auto streams_open = [&] {
        auto body = client.get("/metrics").body;
        auto pos = body.find("\nbuzzer_sse_streams ");
        return pos == std::string::npos ? -1 : std::stoi(body.substr(pos + 20));
    };
    {
        std::vector<sse_stream> many;
        for (int i = 0; i < 50; ++i)
            many.emplace_back(server.port(), "/operations/" + id + "/status");
        BOOST_TEST(wait_until([&] { return streams_open() == 50; }, 5s));
    }
    BOOST_TEST(wait_until([&] { return streams_open() == 0; }, 5s));
    client.post_json("/operations/" + id + "/cancel", "");
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_CASE(streams_resume_across_a_kill9_restart) {
    temp_dir dir;
    auto db = dir / "sse.db";
    std::string id;
    std::vector<sse_event> before;
    unsigned short port = 0;
    {
        server_process server{server_options{.database = db}};
        port = server.port();
        http_client client{port};
        id = submit(client, R"({"kind":"sleep","input":{"seconds":3,"steps":30}})");
        sse_stream s(port, "/operations/" + id + "/status");
        while (before.size() < 4)
            if (auto e = s.next_event(5s))
                before.push_back(*e);
            else
                break;
        BOOST_TEST_REQUIRE(before.size() == 4u);
        server.kill9();
        auto tail = s.read_until_end(5s);
        before.insert(before.end(), tail.begin(), tail.end());
        BOOST_TEST(s.ended());
    }
    server_process server{
        server_options{.database = db, .listen = "127.0.0.1:" + std::to_string(port)}};
    sse_stream resumed(port, "/operations/" + id + "/status", *before.back().id);
    BOOST_TEST(resumed.status() == 200);
    auto after = resumed.read_until_end(20s);
    BOOST_TEST_REQUIRE(!after.empty());
    BOOST_TEST(after.front().type == "pending");  // written by the recovery
    BOOST_TEST(after.back().type == "completed");
    // Nothing twice: every id after the restart is new.
    for (const auto& e : after) BOOST_TEST(std::stoll(*e.id) > std::stoll(*before.back().id));
    // A fresh full replay is the concatenation, without gaps.
    sse_stream full(port, "/operations/" + id + "/status");
    auto all = full.read_until_end(10s);
    BOOST_TEST(all.size() == before.size() + after.size());
}
