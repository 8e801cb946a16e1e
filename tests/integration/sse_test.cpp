#define BOOST_TEST_MODULE integration_sse
#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/test/unit_test.hpp>
#include <functional>
#include <map>
#include <memory>
#include <optional>

#include "integration/common.hpp"
#include "support/sse_client.hpp"

using namespace buzzer::test;
namespace json = boost::json;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

namespace {

struct server_fixture {
    server_process server{
        server_options{.args = {"--sse-heartbeat", "0.3", "--sse-retry-ms", "1500"}}};
    http_client client{server.port()};
};

std::int64_t seq_of(const sse_event& e) {
    BOOST_TEST_REQUIRE(e.id.has_value());
    return id_number(e);
}

std::vector<std::int64_t> ids_of(const std::vector<sse_event>& events) {
    std::vector<std::int64_t> out;
    for (const auto& e : events) out.push_back(seq_of(e));
    return out;
}

// The ids of `events` greater than `after`, in order.
std::vector<std::int64_t> ids_after(const std::vector<sse_event>& events, std::int64_t after) {
    std::vector<std::int64_t> out;
    for (const auto& e : events)
        if (seq_of(e) > after) out.push_back(seq_of(e));
    return out;
}

// The operation id in an event's data.
std::string operation_of(const sse_event& e) {
    return std::string(json::parse(e.data).as_object().at("id").as_string());
}

// Every stored event of `target` (whose operations have all ended), read from the start.
std::vector<sse_event> full_replay(unsigned short port, const std::string& target) {
    sse_stream s(port, target);
    BOOST_TEST_REQUIRE(s.status() == 200);
    auto events = s.read_until_end(15s);
    BOOST_TEST_REQUIRE(s.ended(), "the replay of " << target << " did not end");
    return events;
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

BOOST_AUTO_TEST_CASE(sleep_reports_every_step_even_when_steps_are_short) {
    // 50 steps of 10 ms: each is an event, none is merged into the next.
    auto id = submit(client, R"({"kind":"sleep","input":{"seconds":0.5,"steps":50}})");
    wait_for_status(client, id, "succeeded");
    auto events = full_replay(server.port(), "/operations/" + id + "/status");
    std::vector<std::int64_t> percents, expected;
    for (const auto& e : events)
        if (e.type == "progress")
            percents.push_back(json::parse(e.data).as_object().at("percent").as_int64());
    for (int step = 1; step <= 50; ++step) expected.push_back(step * 100 / 50);
    BOOST_TEST(percents == expected, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(the_accept_header_chooses_the_stream_by_its_weights) {
    auto id = submit(client, R"({"kind":"echo"})");
    wait_for_status(client, id, "succeeded");
    auto const target = "/operations/" + id + "/status";
    for (std::string accept :
         {"text/event-stream", "text/event-stream, application/json",
          "application/json;q=0.5, text/event-stream", "Text/Event-Stream; q=1.0"}) {
        BOOST_TEST_CONTEXT(accept) {
            auto r = client.get(target, {{"Accept", accept}});
            BOOST_TEST(r.status == 200);
            BOOST_TEST(r.header("Content-Type").starts_with("text/event-stream"));
        }
    }
    // The succeeded operation's monitor answers JSON with 303.
    for (std::string accept :
         {"text/event-stream;q=0, application/json", "application/json, text/event-stream;q=0.5",
          "*/*", "application/*;q=0.9, text/event-stream;q=0.8", "text/html"}) {
        BOOST_TEST_CONTEXT(accept) {
            auto r = client.get(target, {{"Accept", accept}});
            BOOST_TEST(r.status == 303);
        }
    }
}

BOOST_AUTO_TEST_CASE(head_of_a_stream_has_the_fields_of_its_get) {
    auto id = submit(client, R"({"kind":"sleep","input":{"seconds":30}})");
    auto r = client.request("HEAD", "/operations/" + id + "/status", "",
                            {{"Accept", "text/event-stream"}});
    BOOST_TEST(r.status == 200);
    BOOST_TEST(r.header("Content-Type").starts_with("text/event-stream"));
    BOOST_TEST(r.header("Cache-Control") == "no-store");
    BOOST_TEST(!r.has_header("Content-Length"));
    BOOST_TEST(r.body.empty());
    // The connection goes on.
    BOOST_TEST(client.get("/healthz").status == 200);
    client.post_json("/operations/" + id + "/cancel", "");
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
    BOOST_TEST(s.header("Content-Type").starts_with("text/event-stream"));
    BOOST_TEST(s.header("Cache-Control") == "no-store");
    BOOST_TEST(s.header("X-Accel-Buffering") == "no");
    auto events = s.read_until_end(15s);
    BOOST_TEST(s.ended());
    BOOST_TEST(s.raw_text().starts_with("retry: 1500\n"));
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

BOOST_AUTO_TEST_CASE(last_event_id_beyond_the_newest_event_replays_nothing_then_goes_live) {
    // Past every id, and past the range of a 64-bit integer: both are non-negative integers.
    for (std::string beyond : {"999999999999", "123456789012345678901234567890"}) {
        BOOST_TEST_CONTEXT("Last-Event-ID: " << beyond) {
            auto id = submit(client, R"({"kind":"sleep","input":{"seconds":2,"steps":4}})");
            wait_for_status(client, id, "running");
            // The newest id for now: the running event, second of a full stream.
            sse_stream first(server.port(), "/operations/" + id + "/status");
            std::int64_t newest = 0;
            for (int i = 0; i < 2; ++i)
                if (auto e = first.next_event(5s)) newest = seq_of(*e);
            BOOST_TEST_REQUIRE(newest > 0);
            sse_stream s(server.port(), "/operations/" + id + "/status", beyond);
            BOOST_TEST_REQUIRE(s.status() == 200);
            auto events = s.read_until_end(8s);
            BOOST_TEST(s.ended(), "the stream did not go live, or did not end after the terminal");
            BOOST_TEST_REQUIRE(!events.empty());
            for (const auto& e : events) {
                BOOST_TEST((e.type == "progress" || e.type == "completed"), "replayed " << e.type);
                BOOST_TEST(seq_of(e) > newest);
            }
            BOOST_TEST(events.back().type == "completed");
            // Past the terminal event now: 204.
            sse_stream after(server.port(), "/operations/" + id + "/status", beyond);
            BOOST_TEST(after.status() == 204);
        }
    }
}

BOOST_AUTO_TEST_CASE(last_event_id_of_another_operation_replays_this_streams_later_events) {
    auto a = submit(client, R"({"kind":"sleep","input":{"seconds":0.8,"steps":2}})");
    wait_for_status(client, a, "running");
    auto b = submit(client, R"({"kind":"echo","input":"b"})");
    wait_for_status(client, b, "succeeded");
    wait_for_status(client, a, "succeeded");
    auto a_events = full_replay(server.port(), "/operations/" + a + "/status");
    auto b_events = full_replay(server.port(), "/operations/" + b + "/status");
    // B's terminal event came between A's first and last.
    auto n = seq_of(b_events.back());
    BOOST_TEST_REQUIRE(seq_of(a_events.front()) < n);
    BOOST_TEST_REQUIRE(seq_of(a_events.back()) > n);
    auto want = ids_after(a_events, n);
    for (const std::string& target :
         {"/operations/" + a + "/status", "/events?operation=" + a,
          "/events?operation=" + a + "&last_event_id=" + std::to_string(n)}) {
        BOOST_TEST_CONTEXT(target) {
            auto header = target.find("last_event_id") == std::string::npos
                              ? std::optional<std::string>(std::to_string(n))
                              : std::nullopt;
            sse_stream s(server.port(), target, header);
            BOOST_TEST_REQUIRE(s.status() == 200);
            auto got = s.read_until_end(10s);
            BOOST_TEST(s.ended());
            BOOST_TEST(ids_of(got) == want, boost::test_tools::per_element());
        }
    }
}

BOOST_AUTO_TEST_CASE(a_reconnect_past_some_of_the_operations_gets_the_rest_and_ends) {
    auto a = submit(client, R"({"kind":"echo","input":"a"})");
    wait_for_status(client, a, "succeeded");
    auto a_end = seq_of(full_replay(server.port(), "/operations/" + a + "/status").back());
    auto b = submit(client, R"({"kind":"sleep","input":{"seconds":1,"steps":2}})");
    std::string const target = "/events?operation=" + a + "&operation=" + b;
    wait_for_status(client, b, "running");
    BOOST_TEST_CONTEXT("past A's terminal event while B runs") {
        // B's later events arrive live; once B ends, every operation has.
        sse_stream s(server.port(), target, std::to_string(a_end));
        BOOST_TEST_REQUIRE(s.status() == 200);
        auto events = s.read_until_end(8s);
        BOOST_TEST(s.ended(), "the stream stayed open after B had ended");
        BOOST_TEST_REQUIRE(!events.empty());
        for (const auto& e : events) BOOST_TEST(operation_of(e) == b);
        BOOST_TEST(events.back().type == "completed");
    }
    wait_for_status(client, b, "succeeded");
    auto all = full_replay(server.port(), target);
    BOOST_TEST_REQUIRE(operation_of(all.back()) == b);
    auto b_end = seq_of(all.back());
    BOOST_TEST_CONTEXT("past A's terminal event, B ended") {
        sse_stream s(server.port(), target, std::to_string(a_end));
        BOOST_TEST_REQUIRE(s.status() == 200);
        auto events = s.read_until_end(8s);
        BOOST_TEST(s.ended(), "the stream stayed open after replaying B's terminal event");
        BOOST_TEST(ids_of(events) == ids_after(all, a_end), boost::test_tools::per_element());
    }
    BOOST_TEST_CONTEXT("just before B's terminal event") {
        sse_stream s(server.port(), target, std::to_string(b_end - 1));
        BOOST_TEST_REQUIRE(s.status() == 200);
        auto events = s.read_until_end(8s);
        BOOST_TEST(s.ended());
        BOOST_TEST((types_of(events) == std::vector<std::string>{"completed"}));
    }
    for (auto n : {b_end, b_end + 1000}) {
        BOOST_TEST_CONTEXT("at or past every terminal event: " << n) {
            sse_stream s(server.port(), target, std::to_string(n));
            BOOST_TEST(s.status() == 204);
        }
    }
    // The status monitor's event stream: 204 at its own terminal event, both answers vary on
    // Accept.
    sse_stream done(server.port(), "/operations/" + a + "/status", std::to_string(a_end));
    BOOST_TEST(done.status() == 204);
    BOOST_TEST(done.header("Vary").find("Accept") != std::string::npos, done.header("Vary"));
    sse_stream rest(server.port(), "/operations/" + b + "/status", std::to_string(a_end));
    BOOST_TEST(rest.status() == 200);
    BOOST_TEST(rest.header("Vary").find("Accept") != std::string::npos, rest.header("Vary"));
}

BOOST_AUTO_TEST_CASE(resuming_while_events_are_written_loses_none_and_repeats_none) {
    // Ten operations reporting progress: on one stream, an event every few milliseconds.
    std::string target = "/events?";
    for (int i = 0; i < 10; ++i)
        target += (i ? "&" : "") + std::string("operation=") +
                  submit(client, R"({"kind":"sleep","input":{"seconds":2.5,"steps":250}})");
    sse_stream base(server.port(), target);
    BOOST_TEST_REQUIRE(base.status() == 200);
    std::vector<sse_event> seen;
    struct resumed {
        std::int64_t after;
        std::unique_ptr<sse_stream> stream;
    };
    std::vector<resumed> streams;
    // Reconnect every few events, as clients whose connections drop do; some connect fresh.
    while (streams.size() < 24) {
        auto e = base.next_event(5s);
        if (!e) break;
        seen.push_back(*e);
        if (seen.size() % 4 != 0) continue;
        bool fresh = streams.size() % 6 == 5;
        streams.push_back({fresh ? 0 : seq_of(*e),
                           std::make_unique<sse_stream>(
                               server.port(), target,
                               fresh ? std::nullopt : std::optional<std::string>(*e->id))});
    }
    BOOST_TEST_REQUIRE(streams.size() == 24u, "the operations ended too soon: " << seen.size());
    auto rest = base.read_until_end(20s);
    BOOST_TEST_REQUIRE(base.ended());
    seen.insert(seen.end(), rest.begin(), rest.end());
    // The stored history is the truth; every stream must be exactly its part after `after`.
    auto all = ids_of(full_replay(server.port(), target));
    BOOST_TEST(ids_of(seen) == all, boost::test_tools::per_element());
    for (std::size_t i = 0; i < streams.size(); ++i) {
        BOOST_TEST_CONTEXT("stream " << i << " after " << streams[i].after) {
            auto& s = *streams[i].stream;
            BOOST_TEST_REQUIRE(s.status() == 200);
            auto events = s.read_until_end(20s);
            BOOST_TEST(s.ended());
            std::vector<std::int64_t> want;
            for (auto id : all)
                if (id > streams[i].after) want.push_back(id);
            BOOST_TEST(ids_of(events) == want, boost::test_tools::per_element());
        }
    }
}

BOOST_AUTO_TEST_CASE(the_server_runs_with_the_flags_of_the_run) { check_flags_of_the_run(server); }

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
        before = s.next_events(4, 5s);
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

BOOST_AUTO_TEST_CASE(thousands_of_vanishing_clients_leave_no_stream_behind) {
    // The default heartbeat (15 s): no write to a vanished client tells the server it has gone.
    server_process server;
    http_client client{server.port()};
    auto id = submit(client, R"({"kind":"sleep","input":{"seconds":60}})");
    std::string const request = "GET /operations/" + id +
                                "/status HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                "Accept: text/event-stream\r\n\r\n";
    asio::io_context io;
    tcp::endpoint const at(asio::ip::address_v4::loopback(), server.port());
    // A reset, no FIN: the client is simply gone.
    auto vanish = [](tcp::socket& s) {
        boost::system::error_code ignored;
        s.set_option(asio::socket_base::linger(true, 0), ignored);
        s.close(ignored);
    };
    int heads = 0;
    constexpr int batches = 6, per_batch = 250;
    for (int batch = 0; batch < batches; ++batch) {
        std::vector<std::unique_ptr<tcp::socket>> socks;
        for (int i = 0; i < per_batch; ++i) {
            socks.push_back(std::make_unique<tcp::socket>(io));
            socks.back()->connect(at);
            asio::write(*socks.back(), asio::buffer(request));
        }
        // Half vanish at once, most before their stream's head is written; the other half once
        // it has arrived.
        std::vector<std::array<char, 512>> buffers(socks.size());
        for (std::size_t i = 0; i < socks.size(); ++i) {
            if (i % 2 == 0) {
                vanish(*socks[i]);
                continue;
            }
            socks[i]->async_read_some(asio::buffer(buffers[i]),
                                      [&heads](boost::system::error_code ec, std::size_t n) {
                                          if (!ec && n > 0) ++heads;
                                      });
        }
        io.restart();
        io.run_for(20s);
        for (auto& s : socks) vanish(*s);
    }
    BOOST_TEST(heads == batches * per_batch / 2);
    BOOST_TEST(wait_until([&] { return metric(client, "buzzer_sse_streams") == 0; }, 5s),
               "open streams: " << metric(client, "buzzer_sse_streams"));
    BOOST_TEST(wait_until([&] { return metric(client, "buzzer_sse_subscribers") == 0; }, 5s),
               "hub subscribers: " << metric(client, "buzzer_sse_subscribers"));
    BOOST_TEST(wait_until([&] { return metric(client, "buzzer_http_connections") == 1; }, 5s),
               "open connections: " << metric(client, "buzzer_http_connections"));
    // Still serving, streams included.
    BOOST_TEST(status_of(client, id).at("status").as_string() == "running");
    sse_stream s(server.port(), "/operations/" + id + "/status");
    BOOST_TEST_REQUIRE(s.status() == 200);
    auto first = s.next_event(5s);
    BOOST_TEST_REQUIRE(first.has_value());
    BOOST_TEST(first->type == "pending");
    client.post_json("/operations/" + id + "/cancel", "");
    auto rest = s.read_until_end(10s);
    BOOST_TEST_REQUIRE(!rest.empty());
    BOOST_TEST(rest.back().type == "canceled");
}

// An exec kind that reports progress with 250 KB messages, twenty times a second.
constexpr std::string_view chatty_script = R"sh(msg=$(head -c 250000 /dev/zero | tr '\0' x)
i=0
while [ $i -lt 1000 ]; do
  echo "{\"progress\": {\"percent\": 1, \"message\": \"$i $msg\"}}"
  sleep 0.05
  i=$((i + 1))
done
)sh";

BOOST_AUTO_TEST_CASE(a_client_that_never_reads_is_ended_past_its_backlog) {
    temp_dir dir;
    auto script = dir.write_file("chatty.sh", chatty_script);
    auto config = dir.write_file("buzzer.json", R"({"kinds": {"chatty": {
        "exec": {"argv": ["/bin/sh", ")" + script.string() +
                                                    R"("], "max_output": 1000000000},
        "timeout_s": 120}}})");
    server_process server{server_options{
        .args = {"--config", config.string(), "--sse-backlog", "4", "--sse-heartbeat", "0.3"}}};
    http_client client{server.port()};
    auto id = submit(client, R"({"kind":"chatty"})");
    wait_for_status(client, id, "running");
    std::string const target = "/operations/" + id + "/status";

    // A client with a small receive window that sends its request and never reads.
    asio::io_context io;
    tcp::socket slow(io);
    slow.open(tcp::v4());
    slow.set_option(asio::socket_base::receive_buffer_size(4096));
    slow.connect(tcp::endpoint(asio::ip::address_v4::loopback(), server.port()));
    asio::write(slow, asio::buffer("GET " + target +
                                   " HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                   "Accept: text/event-stream\r\n\r\n"));
    // And one that reads, on an operation of its own: its events are small and keep coming.
    auto other = submit(client, R"({"kind":"sleep","input":{"seconds":60,"steps":600}})");
    sse_stream good(server.port(), "/operations/" + other + "/status");
    BOOST_TEST_REQUIRE(good.status() == 200);
    std::size_t good_events = 0;
    auto read_good = [&] {
        while (auto e = good.next_event(10ms)) ++good_events;
    };
    BOOST_TEST_REQUIRE(wait_until(
        [&] {
            read_good();
            return metric(client, "buzzer_sse_streams") == 2;
        },
        5s));
    // Past 4 events queued for it, the slow stream ends; the other one goes on.
    auto const start = std::chrono::steady_clock::now();
    bool ended = wait_until(
        [&] {
            read_good();
            return metric(client, "buzzer_sse_streams") == 1;
        },
        10s);
    BOOST_TEST(ended, "the slow stream is still open after "
                          << std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::chrono::steady_clock::now() - start)
                                 .count()
                          << " ms");
    BOOST_TEST_MESSAGE("the slow stream ended after "
                       << std::chrono::duration_cast<std::chrono::milliseconds>(
                              std::chrono::steady_clock::now() - start)
                              .count()
                       << " ms, " << good_events << " events on the other one");
    // Its subscription goes a moment after the stream: the hub drops it on its own strand.
    BOOST_TEST(wait_until(
        [&] {
            read_good();
            return metric(client, "buzzer_sse_subscribers") == 1;
        },
        5s));
    auto before = good_events;
    BOOST_TEST(wait_until(
        [&] {
            read_good();
            return good_events >= before + 5;
        },
        5s));
    BOOST_TEST(client.get("/healthz").status == 200);

    // The slow client finds the connection ended once it reads.
    std::array<char, 65536> buf{};
    bool closed = false;
    std::function<void()> drain = [&] {
        slow.async_read_some(asio::buffer(buf), [&](boost::system::error_code ec, std::size_t) {
            if (ec)
                closed = true;
            else
                drain();
        });
    };
    drain();
    io.run_for(10s);
    BOOST_TEST(closed, "the slow client's connection is still open");

    client.post_json("/operations/" + id + "/cancel", "");
    client.post_json("/operations/" + other + "/cancel", "");
    auto rest = good.read_until_end(15s);
    BOOST_TEST_REQUIRE(!rest.empty());
    BOOST_TEST(rest.back().type == "canceled");
    BOOST_TEST(wait_until([&] { return metric(client, "buzzer_sse_streams") == 0; }, 5s));
    BOOST_TEST(wait_until([&] { return metric(client, "buzzer_sse_subscribers") == 0; }, 5s));
}

BOOST_AUTO_TEST_CASE(sigterm_ends_open_streams_with_the_last_chunk_and_exits_0) {
    server_process server;
    http_client client{server.port()};
    auto id = submit(client, R"({"kind":"sleep","input":{"seconds":60}})");
    wait_for_status(client, id, "running");
    std::vector<std::string> received;
    std::vector<raw_connection> streams;
    for (const std::string& target : {"/operations/" + id + "/status", "/events?operation=" + id}) {
        streams.emplace_back(server.port());
        BOOST_TEST_REQUIRE(!streams.back().send("GET " + target +
                                                " HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                                "Accept: text/event-stream\r\n\r\n"));
        std::string got;
        BOOST_TEST(wait_until(
            [&] {
                got += streams.back().receive(50ms);
                return got.find("event: running") != std::string::npos;
            },
            5s));
        BOOST_TEST_REQUIRE(got.starts_with("HTTP/1.1 200"), got);
        BOOST_TEST(got.find("Transfer-Encoding: chunked") != std::string::npos, got);
        received.push_back(got);
    }
    BOOST_TEST(server.terminate(15s) == 0);
    for (std::size_t i = 0; i < streams.size(); ++i) {
        BOOST_TEST_CONTEXT("stream " << i) {
            received[i] += streams[i].receive_until_close(5s);
            BOOST_TEST(streams[i].closed());
            // The chunked body ends with its last chunk: a clean end, not a cut connection.
            BOOST_TEST(received[i].ends_with("\r\n0\r\n\r\n"), received[i]);
        }
    }
}
