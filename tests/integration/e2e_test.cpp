// One operation end to end, the way a client sees it: submitted, followed on its event stream
// to `completed`, redirected to its result, and its stream resumed with Last-Event-ID after a
// restart and after a kill -9. Small and slow-machine tolerant: the arm64 build runs it under
// qemu-user.
#define BOOST_TEST_MODULE integration_e2e
#include <boost/test/unit_test.hpp>

#include "integration/common.hpp"
#include "support/sse_client.hpp"

using namespace buzzer::test;
using namespace std::chrono_literals;

namespace {

std::string listen_on(unsigned short port) { return "127.0.0.1:" + std::to_string(port); }

}  // namespace

BOOST_AUTO_TEST_CASE(submit_stream_to_completed_restart_and_resume) {
    temp_dir dir("buzzer-e2e-");
    const auto db = dir / "e2e.db";
    std::optional<server_process> server(server_options{.database = db});
    const auto port = server->port();
    std::string id;
    std::vector<sse_event> events;
    {
        http_client client(port);
        id = submit(client, R"({"kind":"sleep","input":{"seconds":0.4,"steps":2}})");
        sse_stream stream(port, "/operations/" + id + "/status");
        BOOST_TEST_REQUIRE(stream.status() == 200);
        BOOST_TEST(stream.header("Content-Type").starts_with("text/event-stream"));
        events = stream.read_until_end(60s);
        BOOST_TEST(stream.ended());
        BOOST_TEST_REQUIRE(events.size() >= 3u);
        BOOST_TEST(events.front().type == "pending");
        BOOST_TEST(events.back().type == "completed");
        auto status = client.get("/operations/" + id + "/status");
        BOOST_TEST(status.status == 303);
        BOOST_TEST(status.header("Location") == "/operations/" + id);
        auto result = client.get("/operations/" + id);
        BOOST_TEST(result.status == 200, result.body);
    }

    // A graceful restart on the same database and port: the stream resumes after the second
    // event with exactly the events that followed it, and ends.
    BOOST_TEST(server->terminate() == 0);
    server.reset();
    server.emplace(server_options{.database = db, .listen = listen_on(port)});
    sse_stream resumed(port, "/operations/" + id + "/status", *events[1].id);
    BOOST_TEST_REQUIRE(resumed.status() == 200);
    auto rest = resumed.read_until_end(60s);
    BOOST_TEST(resumed.ended());
    const std::vector<sse_event> expected(events.begin() + 2, events.end());
    BOOST_TEST(types_of(rest) == types_of(expected), boost::test_tools::per_element());
    for (std::size_t i = 0; i < std::min(rest.size(), expected.size()); ++i)
        BOOST_TEST(id_number(rest[i]) == id_number(expected[i]));
    // Resumed at its last event, the stream has nothing more: 204, and EventSource stops.
    sse_stream done(port, "/operations/" + id + "/status", *events.back().id);
    BOOST_TEST(done.status() == 204);
}

BOOST_AUTO_TEST_CASE(a_stream_resumes_across_a_kill9_while_its_job_runs) {
    temp_dir dir("buzzer-e2e-");
    const auto db = dir / "e2e.db";
    std::optional<server_process> server(server_options{.database = db});
    const auto port = server->port();
    http_client client(port);
    const auto id = submit(client, R"({"kind":"sleep","input":{"seconds":3,"steps":30}})");
    std::vector<sse_event> before;
    {
        sse_stream stream(port, "/operations/" + id + "/status");
        before = stream.next_events(3, 30s);
        BOOST_TEST_REQUIRE(before.size() == 3u);
        BOOST_TEST(before[1].type == "running");
        server->kill9();
        auto tail = stream.read_until_end(10s);
        before.insert(before.end(), tail.begin(), tail.end());
    }
    server.reset();
    server.emplace(server_options{.database = db, .listen = listen_on(port)});
    sse_stream resumed(port, "/operations/" + id + "/status", *before.back().id);
    BOOST_TEST_REQUIRE(resumed.status() == 200);
    auto after = resumed.read_until_end(120s);
    BOOST_TEST(resumed.ended());
    BOOST_TEST_REQUIRE(!after.empty());
    BOOST_TEST(after.back().type == "completed");
    for (const auto& e : after) BOOST_TEST(id_number(e) > id_number(before.back()));
    http_client again(port);
    wait_for_status(again, id, "succeeded", 60s);
}
