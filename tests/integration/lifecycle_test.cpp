#define BOOST_TEST_MODULE integration_lifecycle
#include <boost/test/unit_test.hpp>
#include <latch>
#include <map>
#include <regex>
#include <set>
#include <thread>

#include "integration/common.hpp"
#include "support/sse_client.hpp"

using namespace buzzer::test;
namespace json = boost::json;
using namespace std::chrono_literals;

namespace {

struct server_fixture {
    server_process server{server_options{.args = {"--max-running", "4"}}};
    http_client client{server.port()};
};

std::string str(const json::object& o, std::string_view key) {
    return std::string(o.at(key).as_string());
}

// `ids` as the names given to them in `names`, space-separated, for messages.
std::string names_of(const std::vector<std::string>& ids,
                     const std::map<std::string, std::string>& names) {
    std::string out;
    for (const auto& id : ids) {
        auto it = names.find(id);
        out += (out.empty() ? "" : " ") + (it == names.end() ? id : it->second);
    }
    return out;
}

}  // namespace

BOOST_FIXTURE_TEST_SUITE(lifecycle, server_fixture)

BOOST_AUTO_TEST_CASE(submit_answers_202_with_monitor_links) {
    auto r = client.post_json("/operations", R"({"kind":"sleep","input":{"seconds":0.2}})");
    BOOST_TEST(r.status == 202);
    auto op = r.json().as_object();
    auto id = str(op, "id");
    BOOST_TEST(id.size() == 26u);
    BOOST_TEST(r.header("Location") == "/operations/" + id + "/status");
    BOOST_TEST(r.header("Operation-Location") == "/operations/" + id + "/status");
    BOOST_TEST(!r.header("Retry-After").empty());
    BOOST_TEST(r.header("Retry-After").find_first_not_of("0123456789") == std::string::npos);
    BOOST_TEST(r.header("Content-Type").starts_with("application/json"));
    BOOST_TEST(r.header("Vary").find("Prefer") != std::string::npos);
    BOOST_TEST(str(op, "kind") == "sleep");
    BOOST_TEST(str(op, "status") == "pending");
    BOOST_TEST(op.at("max_attempts").as_int64() == 3);
    BOOST_TEST(op.at("progress").is_null());
    BOOST_TEST(op.at("error").is_null());
    BOOST_TEST(str(op, "created_at").size() == 24u);  // 2026-11-22T02:04:54.123Z
    BOOST_TEST(str(op, "created_at").back() == 'Z');
}

BOOST_AUTO_TEST_CASE(an_idle_server_starts_an_operation_in_the_commit_that_accepts_it) {
    auto r = client.post_json("/operations", R"({"kind":"sleep","input":{"seconds":30}})");
    BOOST_TEST_REQUIRE(r.status == 202);
    auto accepted = r.json().as_object();
    BOOST_TEST(str(accepted, "status") == "pending");  // as accepted
    auto id = str(accepted, "id");
    if (store_is_postgres()) {
        // Many nodes claim from the table: a node starts it by the claim that follows the commit.
        wait_for_status(client, id, "running");
        auto op = status_of(client, id);
        BOOST_TEST(op.at("attempt").as_int64() == 1);
        BOOST_TEST(str(op, "started_at") >= str(op, "created_at"));
    } else {
        // Stored as running by the commit that accepted it: the first read after the 202 sees it.
        auto op = status_of(client, id);
        BOOST_TEST(str(op, "status") == "running");
        BOOST_TEST(op.at("attempt").as_int64() == 1);
        BOOST_TEST(str(op, "started_at") == str(op, "created_at"));
    }
    client.post_json("/operations/" + id + "/cancel", "");
    wait_for_status(client, id, "canceled");
}

BOOST_AUTO_TEST_CASE(submissions_that_store_nothing_give_their_place_back) {
    // One slot: a place taken by a replay or a refused request and not given back would leave
    // every later operation pending.
    server_process one{server_options{.args = {"--max-running", "1"}}};
    http_client c{one.port()};
    headers key{{"Idempotency-Key", "only-once"}};
    auto id = submit(c, R"({"kind":"echo","input":1})", key);
    wait_for_status(c, id, "succeeded");
    for (int i = 0; i < 3; ++i) {
        auto replay = c.post_json("/operations", R"({"kind":"echo","input":1})", key);
        BOOST_TEST(replay.status == 202);
        BOOST_TEST(replay.header("Idempotent-Replayed") == "true");
        auto reused = c.post_json("/operations", R"({"kind":"echo","input":2})", key);
        BOOST_TEST(reused.status == 422);
    }
    auto next = submit(c, R"({"kind":"echo","input":3})");
    wait_for_status(c, next, "succeeded", 5s);
}

BOOST_AUTO_TEST_CASE(echo_succeeds_and_the_result_is_immutable) {
    auto id = submit(client, R"({"kind":"echo","input":{"hello":"world","n":[1,2,3]}})");
    wait_for_status(client, id, "succeeded");
    auto s = client.get("/operations/" + id + "/status");
    BOOST_TEST(s.status == 303);
    BOOST_TEST(s.header("Location") == "/operations/" + id);
    BOOST_TEST(s.header("Vary").find("Accept") != std::string::npos);
    auto links = s.json().as_object().at("links").as_array();
    bool has_result = false;
    for (const auto& l : links) has_result |= l.as_object().at("rel").as_string() == "result";
    BOOST_TEST(has_result);

    auto r = client.get("/operations/" + id);
    BOOST_TEST(r.status == 200);
    BOOST_TEST(r.header("Content-Type").starts_with("application/json"));
    BOOST_TEST(r.json() == json::parse(R"({"hello":"world","n":[1,2,3]})"));
    auto etag = r.header("ETag");
    BOOST_TEST(etag.size() > 2u);
    BOOST_TEST(etag.front() == '"');
    BOOST_TEST(r.header("Cache-Control") == "private, max-age=31536000, immutable");
    auto again = client.get("/operations/" + id, {{"If-None-Match", etag}});
    BOOST_TEST(again.status == 304);
    BOOST_TEST(again.body.empty());
    BOOST_TEST(client.get("/operations/" + id, {{"If-None-Match", "\"other\""}}).status == 200);
}

BOOST_AUTO_TEST_CASE(echo_gives_back_the_input_exactly_as_sent) {
    // Numbers a double cannot hold, negative zero, escapes: the result is the input's text.
    const std::string input =
        R"({"big":12345678901234567890123,"z":-0,"f":1.5,"e":1e400,"s":"\u00e9\n"})";
    auto id = submit(client, R"({"kind":"echo", "input":  )" + input + " }");
    wait_for_status(client, id, "succeeded");
    auto r = client.get("/operations/" + id);
    BOOST_TEST(r.status == 200);
    BOOST_TEST(r.body == input);
}

BOOST_AUTO_TEST_CASE(sleep_gives_its_seconds_as_written) {
    auto id = submit(client, R"({"kind":"sleep","input":{"seconds":0.25}})");
    wait_for_status(client, id, "succeeded");
    BOOST_TEST(client.get("/operations/" + id).body == R"({"slept":0.25})");
}

BOOST_AUTO_TEST_CASE(echo_without_input_gives_null) {
    auto id = submit(client, R"({"kind":"echo"})");
    wait_for_status(client, id, "succeeded");
    auto r = client.get("/operations/" + id);
    BOOST_TEST(r.status == 200);
    BOOST_TEST(r.json().is_null());
}

BOOST_AUTO_TEST_CASE(sleep_reports_progress_while_running) {
    auto id = submit(client, R"({"kind":"sleep","input":{"seconds":2,"steps":4}})");
    json::object seen;
    bool progressed = wait_until(
        [&] {
            auto r = client.get("/operations/" + id + "/status");
            if (r.status != 200) return false;
            seen = r.json().as_object();
            BOOST_TEST(!r.header("Retry-After").empty());
            return str(seen, "status") == "running" && !seen.at("progress").is_null();
        },
        10s);
    BOOST_TEST_REQUIRE(progressed);
    auto p = seen.at("progress").as_object();
    BOOST_TEST(p.at("percent").as_int64() > 0);
    BOOST_TEST(str(p, "message").find("of 4") != std::string::npos);
    BOOST_TEST(seen.at("started_at").is_string());
    BOOST_TEST(seen.at("attempt").as_int64() == 1);
    auto done = wait_for_status(client, id, "succeeded");
    BOOST_TEST(done.at("progress").as_object().at("percent").as_int64() == 100);
    BOOST_TEST(done.at("finished_at").is_string());
    BOOST_TEST(client.get("/operations/" + id).json() == json::parse(R"({"slept":2})"));
}

BOOST_AUTO_TEST_CASE(result_of_an_unfinished_operation_is_409_with_a_link) {
    auto id = submit(client, R"({"kind":"sleep","input":{"seconds":5}})");
    auto r = client.get("/operations/" + id);
    BOOST_TEST(r.status == 409);
    BOOST_TEST(r.header("Content-Type") == "application/problem+json");
    auto p = r.json().as_object();
    BOOST_TEST(str(p, "type") == "/problems/operation-not-succeeded");
    BOOST_TEST(
        (str(p, "operation_status") == "pending" || str(p, "operation_status") == "running"));
    BOOST_TEST(r.header("Link") == "</operations/" + id + "/status>; rel=\"status\"");
    client.post_json("/operations/" + id + "/cancel", "");
}

BOOST_AUTO_TEST_CASE(failed_attempts_are_retried_until_success) {
    auto id =
        submit(client,
               R"({"kind":"fail","input":{"message":"flaky","fail_attempts":1},"max_attempts":3})");
    auto done = wait_for_status(client, id, "succeeded", 20s);
    BOOST_TEST(done.at("attempt").as_int64() == 2);
    BOOST_TEST(client.get("/operations/" + id).json() == json::parse(R"({"attempts":2})"));
}

BOOST_AUTO_TEST_CASE(a_retry_waits_as_pending_with_the_attempts_error) {
    auto id =
        submit(client,
               R"({"kind":"fail","input":{"message":"flaky","fail_attempts":5},"max_attempts":6})");
    json::object seen;
    bool retrying = wait_until(
        [&] {
            seen = status_of(client, id);
            return str(seen, "status") == "pending" && seen.at("attempt").as_int64() >= 1;
        },
        10s);
    BOOST_TEST_REQUIRE(retrying);
    BOOST_TEST(seen.at("error").is_object());
    BOOST_TEST(detail_of(seen.at("error").as_object()) == "flaky");
    BOOST_TEST(seen.at("progress").is_null());
    client.post_json("/operations/" + id + "/cancel", "");
}

BOOST_AUTO_TEST_CASE(exhausted_attempts_fail_with_the_message) {
    auto id = submit(client, R"({"kind":"fail","input":{"message":"boom"},"max_attempts":1})");
    auto done = wait_for_status(client, id, "failed");
    auto r = client.get("/operations/" + id + "/status");
    BOOST_TEST(r.status == 200);
    BOOST_TEST(r.header("Retry-After").empty());
    auto err = done.at("error").as_object();
    BOOST_TEST(str(err, "type").starts_with("/problems/"));
    BOOST_TEST(detail_of(err) == "boom");
    BOOST_TEST(done.at("attempt").as_int64() == 1);
    bool has_cancel = false;
    for (const auto& l : done.at("links").as_array())
        has_cancel |= l.as_object().at("rel").as_string() == "cancel";
    BOOST_TEST(!has_cancel);
}

BOOST_AUTO_TEST_CASE(fail_defaults_its_message) {
    auto id = submit(client, R"({"kind":"fail","max_attempts":1})");
    auto done = wait_for_status(client, id, "failed");
    BOOST_TEST(detail_of(done.at("error").as_object()) == "failed on purpose");
}

BOOST_AUTO_TEST_CASE(an_attempt_over_its_timeout_fails_as_timeout) {
    auto id = submit(client,
                     R"({"kind":"sleep","input":{"seconds":30},"timeout_s":0.3,"max_attempts":1})");
    auto done = wait_for_status(client, id, "failed", 10s);
    BOOST_TEST(str(done.at("error").as_object(), "type") == "/problems/timeout");
    BOOST_TEST(str(done.at("error").as_object(), "detail").find("(0.3 s)") != std::string::npos,
               str(done.at("error").as_object(), "detail"));
    // Fractions print as written, in the representation too.
    BOOST_TEST(client.get("/operations/" + id + "/status").body.find(R"("timeout_s":0.3,)") !=
               std::string::npos);
}

BOOST_AUTO_TEST_CASE(canceling_a_running_operation_stops_it) {
    auto id = submit(client, R"({"kind":"sleep","input":{"seconds":30}})");
    wait_for_status(client, id, "running");
    auto r = client.post_json("/operations/" + id + "/cancel", "");
    BOOST_TEST(r.status == 202);
    auto done = wait_for_status(client, id, "canceled", 5s);
    BOOST_TEST(str(done.at("error").as_object(), "type") == "/problems/canceled");
    BOOST_TEST(done.at("finished_at").is_string());
    auto again = client.post_json("/operations/" + id + "/cancel", "");
    BOOST_TEST(again.status == 409);
    BOOST_TEST(again.header("Content-Type") == "application/problem+json");
    BOOST_TEST(client.get("/operations/" + id).status == 409);
}

BOOST_AUTO_TEST_CASE(canceling_a_pending_operation_is_immediate) {
    // Four long sleeps fill --max-running 4; the fifth operation waits.
    std::vector<std::string> busy;
    for (int i = 0; i < 4; ++i)
        busy.push_back(submit(client, R"({"kind":"sleep","input":{"seconds":30}})"));
    for (const auto& b : busy) wait_for_status(client, b, "running");
    auto id = submit(client, R"({"kind":"echo","input":1})");
    BOOST_TEST(str(status_of(client, id), "status") == "pending");
    auto r = client.post_json("/operations/" + id + "/cancel", "");
    BOOST_TEST(r.status == 200);
    BOOST_TEST(str(r.json().as_object(), "status") == "canceled");
    for (const auto& b : busy) {
        BOOST_TEST(client.post_json("/operations/" + b + "/cancel", "").status == 202);
        // Repeating the cancel of a cancelling operation is 202 again, or 409 once it ended.
        auto again = client.post_json("/operations/" + b + "/cancel", "").status;
        BOOST_TEST((again == 202 || again == 409));
    }
    for (const auto& b : busy) wait_for_status(client, b, "canceled", 5s);
    BOOST_TEST(str(status_of(client, id), "status") == "canceled");
}

BOOST_AUTO_TEST_CASE(higher_priority_runs_first) {
    std::vector<std::string> busy;
    for (int i = 0; i < 4; ++i)
        busy.push_back(submit(client, R"({"kind":"sleep","input":{"seconds":30}})"));
    for (const auto& b : busy) wait_for_status(client, b, "running");
    auto low = submit(client, R"({"kind":"echo","input":"low","priority":-5})");
    // No slot free: queued, not started.
    auto queued = status_of(client, low);
    BOOST_TEST(str(queued, "status") == "pending");
    BOOST_TEST(queued.at("attempt").as_int64() == 0);
    auto old = submit(client, R"({"kind":"echo","input":"old"})");
    auto high = submit(client, R"({"kind":"echo","input":"high","priority":50})");
    auto young = submit(client, R"({"kind":"echo","input":"young"})");
    client.post_json("/operations/" + busy[0] + "/cancel", "");
    for (const auto& id : {low, old, high, young}) wait_for_status(client, id, "succeeded");
    // Event ids are global and increasing: the order of the `running` events is the order in
    // which the four started (started_at, in milliseconds, can tie).
    sse_stream s(server.port(),
                 "/events?operation=" + low + "&operation=" + old + "&operation=" + high +
                     "&operation=" + young,
                 "0");
    BOOST_TEST_REQUIRE(s.status() == 200);
    std::vector<std::string> started;
    for (const auto& e : s.read_until_end(15s))
        if (e.type == "running") started.push_back(str(json::parse(e.data).as_object(), "id"));
    BOOST_TEST_REQUIRE(s.ended(), "the replay did not end");
    BOOST_TEST((started == std::vector<std::string>{high, old, young, low}),
               "started: " << names_of(
                   started, {{high, "high"}, {old, "old"}, {young, "young"}, {low, "low"}}));
    for (std::size_t i = 1; i < busy.size(); ++i)
        client.post_json("/operations/" + busy[i] + "/cancel", "");
}

BOOST_AUTO_TEST_CASE(delete_forgets_only_finished_operations) {
    auto running = submit(client, R"({"kind":"sleep","input":{"seconds":30}})");
    auto r = client.del("/operations/" + running);
    BOOST_TEST(r.status == 409);
    BOOST_TEST(r.header("Content-Type") == "application/problem+json");
    client.post_json("/operations/" + running + "/cancel", "");
    wait_for_status(client, running, "canceled");

    auto id = submit(client, R"({"kind":"echo","input":{"x":1}})");
    wait_for_status(client, id, "succeeded");
    auto d = client.del("/operations/" + id);
    BOOST_TEST(d.status == 204);
    BOOST_TEST(d.body.empty());
    BOOST_TEST(client.del("/operations/" + id).status == 404);
    BOOST_TEST(client.get("/operations/" + id).status == 404);
    BOOST_TEST(client.get("/operations/" + id + "/status").status == 404);
    BOOST_TEST(client.del("/operations/" + running).status == 204);
}

BOOST_AUTO_TEST_CASE(finished_operations_are_purged_after_the_retention) {
    server_process short_lived{server_options{.args = {"--retention", "2"}}};
    http_client c{short_lived.port()};
    auto done = submit(c, R"({"kind":"echo","input":1})");
    auto running = submit(c, R"({"kind":"sleep","input":{"seconds":30}})");
    wait_for_status(c, done, "succeeded");
    // Kept for its retention...
    BOOST_TEST(c.get("/operations/" + done).status == 200);
    // ...then gone with its result and its events; what has not finished stays.
    BOOST_TEST(
        wait_until([&] { return c.get("/operations/" + done + "/status").status == 404; }, 10s));
    BOOST_TEST(c.get("/operations/" + done).status == 404);
    sse_stream events(short_lived.port(), "/operations/" + done + "/status");
    BOOST_TEST(events.status() == 404);
    BOOST_TEST(str(status_of(c, running), "status") == "running");
    c.post_json("/operations/" + running + "/cancel", "");
    wait_for_status(c, running, "canceled");
}

BOOST_AUTO_TEST_CASE(a_full_queue_answers_429_with_retry_after) {
    server_process small{server_options{.args = {"--max-running", "1", "--max-pending", "2"}}};
    http_client c{small.port()};
    std::vector<std::string> ids;
    for (int i = 0; i < 3; ++i)
        ids.push_back(submit(c, R"({"kind":"sleep","input":{"seconds":30}})"));
    BOOST_TEST_REQUIRE(
        wait_until([&] { return metric(c, "buzzer_operations_pending") == 2; }, 10s));
    auto full = c.post_json("/operations", R"({"kind":"echo"})");
    BOOST_TEST(full.status == 429);
    BOOST_TEST(full.header("Content-Type") == "application/problem+json");
    BOOST_TEST(str(full.json().as_object(), "type") == "/problems/queue-full");
    BOOST_TEST(!full.header("Retry-After").empty());
    BOOST_TEST(full.header("Vary") == "Prefer");
    // Room again once one is canceled.
    c.post_json("/operations/" + ids[2] + "/cancel", "");
    BOOST_TEST_REQUIRE(
        wait_until([&] { return metric(c, "buzzer_operations_pending") == 1; }, 10s));
    auto again = submit(c, R"({"kind":"echo"})");
    ids.push_back(again);
    for (const auto& id : ids) c.post_json("/operations/" + id + "/cancel", "");
    wait_for_status(c, ids[0], "canceled");
}

BOOST_AUTO_TEST_CASE(list_pages_newest_first_with_filters) {
    std::vector<std::string> ids;
    for (int i = 0; i < 5; ++i)
        ids.push_back(submit(client, R"({"kind":"echo","input":)" + std::to_string(i) + "}"));
    for (const auto& id : ids) wait_for_status(client, id, "succeeded");
    std::vector<std::string> listed;
    std::string next = "/operations?kind=echo&status=succeeded&limit=2";
    int pages = 0;
    while (!next.empty() && pages < 20) {
        auto r = client.get(next);
        BOOST_TEST_REQUIRE(r.status == 200);
        auto body = r.json().as_object();
        auto ops = body.at("operations").as_array();
        BOOST_TEST(ops.size() <= 2u);
        for (const auto& o : ops) {
            BOOST_TEST(o.as_object().at("kind").as_string() == "echo");
            listed.push_back(str(o.as_object(), "id"));
        }
        next = body.at("next").is_null() ? "" : std::string(body.at("next").as_string());
        ++pages;
    }
    BOOST_TEST(pages >= 3);
    // Newest first: the five we made appear in reverse order of submission.
    std::vector<std::string> ours;
    for (const auto& id : listed)
        if (std::find(ids.begin(), ids.end(), id) != ids.end()) ours.push_back(id);
    BOOST_TEST((ours == std::vector<std::string>(ids.rbegin(), ids.rend())));
    for (std::size_t i = 1; i < listed.size(); ++i) BOOST_TEST(listed[i - 1] > listed[i]);

    auto none = client.get("/operations?status=running&kind=echo").json().as_object();
    BOOST_TEST(none.at("operations").as_array().empty());
    BOOST_TEST(none.at("next").is_null());
}

BOOST_AUTO_TEST_CASE(idempotent_replay_returns_the_same_operation) {
    headers key{{"Idempotency-Key", "order-123"}};
    auto first = client.post_json("/operations", R"({"kind":"echo","input":{"a":1,"b":2}})", key);
    BOOST_TEST(first.status == 202);
    BOOST_TEST(!first.has_header("Idempotent-Replayed"));
    auto id = str(first.json().as_object(), "id");
    // Same JSON value, other key order and white space.
    auto replay =
        client.post_json("/operations", R"({ "input": {"b":2, "a":1}, "kind": "echo" })", key);
    BOOST_TEST(replay.status == 202);
    BOOST_TEST(replay.header("Idempotent-Replayed") == "true");
    BOOST_TEST(str(replay.json().as_object(), "id") == id);
    // Equal numbers written otherwise are the same value.
    auto same_numbers =
        client.post_json("/operations", R"({"kind":"echo","input":{"a":1.0,"b":2e0}})", key);
    BOOST_TEST(same_numbers.header("Idempotent-Replayed") == "true");
    BOOST_TEST(str(same_numbers.json().as_object(), "id") == id);
    auto other = client.post_json("/operations", R"({"kind":"echo","input":{"a":2}})", key);
    BOOST_TEST(other.status == 422);
    BOOST_TEST(other.header("Content-Type") == "application/problem+json");
    // A structured-field string names the same key.
    auto quoted = client.post_json("/operations", R"({"kind":"echo","input":{"a":1,"b":2}})",
                                   {{"Idempotency-Key", "\"order-123\""}});
    BOOST_TEST(str(quoted.json().as_object(), "id") == id);
}

BOOST_AUTO_TEST_CASE(racing_duplicates_create_one_operation) {
    constexpr int n = 16;
    // No other operation of this server has this input, and an echo's result is its input:
    // the operations the race made are the echoes whose result it is.
    const std::string input = R"("the input of the race")";
    const std::string body = R"({"kind":"echo","input":)" + input + "}";
    std::vector<std::string> ids(n);
    std::vector<int> codes(n);
    std::vector<std::thread> threads;
    std::latch connected(n);
    for (int i = 0; i < n; ++i) {
        threads.emplace_back([&, i] {
            http_client c(server.port());
            // Connected first, then all at once: the duplicates arrive together.
            bool up = c.get("/healthz").status == 200;
            connected.arrive_and_wait();
            if (!up) return;
            auto r = c.post_json("/operations", body, {{"Idempotency-Key", "race-key"}});
            codes[i] = r.status;
            if (r.status == 202) ids[i] = std::string(r.json().as_object().at("id").as_string());
        });
    }
    for (auto& t : threads) t.join();
    std::set<std::string> distinct;
    for (int i = 0; i < n; ++i) {
        BOOST_TEST((codes[i] == 202 || codes[i] == 409), "request " << i << ": " << codes[i]);
        if (codes[i] == 202) distinct.insert(ids[i]);
    }
    // Every 202 names the same operation...
    BOOST_TEST_REQUIRE(distinct.size() == 1u);
    // ...and the server made no other with this body, answered or not.
    std::vector<std::string> made;
    std::string next = "/operations?kind=echo&limit=500";
    while (!next.empty()) {
        auto page = client.get(next);
        BOOST_TEST_REQUIRE(page.status == 200, page.body);
        const auto& list = page.json().as_object();
        for (const auto& o : list.at("operations").as_array()) {
            auto id = str(o.as_object(), "id");
            wait_for_status(client, id, "succeeded");
            if (client.get("/operations/" + id).body == input) made.push_back(id);
        }
        next = list.at("next").is_null() ? "" : std::string(list.at("next").as_string());
    }
    BOOST_TEST((made == std::vector<std::string>{*distinct.begin()}),
               made.size() << " operations made by the race");
}

BOOST_AUTO_TEST_CASE(prefer_wait_answers_like_the_monitor_when_done_in_time) {
    auto r = client.post_json("/operations", R"({"kind":"echo","input":{"q":1}})",
                              {{"Prefer", "wait=10"}});
    BOOST_TEST(r.status == 303);
    BOOST_TEST(r.header("Preference-Applied") == "wait=10");
    BOOST_TEST(r.header("Vary").find("Prefer") != std::string::npos);
    auto id = str(r.json().as_object(), "id");
    BOOST_TEST(r.header("Location") == "/operations/" + id);
    // Clamped to 0..60, whatever was asked.
    auto clamped = client.post_json("/operations", R"({"kind":"echo","input":{"q":2}})",
                                    {{"Prefer", "wait=99999999999999999999"}});
    BOOST_TEST(clamped.status == 303);
    BOOST_TEST(clamped.header("Preference-Applied") == "wait=60");

    auto failed = client.post_json("/operations", R"({"kind":"fail","max_attempts":1})",
                                   {{"Prefer", "respond-async, wait=10"}});
    BOOST_TEST(failed.status == 200);
    BOOST_TEST(str(failed.json().as_object(), "status") == "failed");

    auto slow = client.post_json("/operations", R"({"kind":"sleep","input":{"seconds":30}})",
                                 {{"Prefer", "wait=1"}});
    BOOST_TEST(slow.status == 202);
    BOOST_TEST(!slow.has_header("Preference-Applied"));
    client.post_json("/operations/" + str(slow.json().as_object(), "id") + "/cancel", "");
}

BOOST_AUTO_TEST_CASE(long_poll_returns_when_the_operation_ends) {
    auto id = submit(client, R"({"kind":"sleep","input":{"seconds":0.5}})");
    auto start = std::chrono::steady_clock::now();
    auto r = client.get("/operations/" + id + "/status?wait=20");
    auto took = std::chrono::steady_clock::now() - start;
    BOOST_TEST(r.status == 303);
    BOOST_TEST((took < 10s));
    auto slow = submit(client, R"({"kind":"sleep","input":{"seconds":30}})");
    start = std::chrono::steady_clock::now();
    auto p = client.get("/operations/" + slow + "/status?wait=1");
    took = std::chrono::steady_clock::now() - start;
    BOOST_TEST(p.status == 200);
    BOOST_TEST((took >= 900ms));
    client.post_json("/operations/" + slow + "/cancel", "");
}

BOOST_AUTO_TEST_CASE(a_long_poll_whose_client_left_ends_at_once) {
    auto slow = submit(client, R"({"kind":"sleep","input":{"seconds":60}})");
    const auto before = metric(client, "buzzer_http_connections");
    {
        // Two long polls (GET ?wait= and POST with Prefer: wait) whose clients hang up.
        raw_connection poll(server.port());
        BOOST_TEST_REQUIRE(
            !poll.send("GET /operations/" + slow + "/status?wait=60 HTTP/1.1\r\nHost: t\r\n\r\n"));
        const std::string body = R"({"kind":"sleep","input":{"seconds":60}})";
        raw_connection post(server.port());
        BOOST_TEST_REQUIRE(
            !post.send("POST /operations HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                       "Prefer: wait=60\r\nContent-Length: " +
                       std::to_string(body.size()) + "\r\n\r\n" + body));
        BOOST_TEST_REQUIRE(wait_until(
            [&] { return metric(client, "buzzer_http_connections") == before + 2; }, 10s));
    }
    // Without noticing, the server would hold both for 60 s.
    BOOST_TEST(
        wait_until([&] { return metric(client, "buzzer_http_connections") == before; }, 10s));
    // A long poll that is not given up still gets its answer.
    auto quick = submit(client, R"({"kind":"sleep","input":{"seconds":0.3}})");
    BOOST_TEST(client.get("/operations/" + quick + "/status?wait=10").status == 303);
    client.post_json("/operations/" + slow + "/cancel", "");
}

BOOST_AUTO_TEST_CASE(service_endpoints_answer) {
    auto k = client.get("/kinds");
    BOOST_TEST(k.status == 200);
    auto kinds = k.json().as_object().at("kinds").as_array();
    std::set<std::string> names;
    for (const auto& e : kinds) {
        const auto& o = e.as_object();
        names.insert(str(o, "name"));
        for (auto f : {"executor", "timeout_s", "max_attempts", "concurrency", "priority"})
            BOOST_TEST(o.contains(f));
    }
    BOOST_TEST((names == std::set<std::string>{"echo", "fail", "sleep"}));
    BOOST_TEST(client.get("/healthz").json() == json::parse(R"({"status":"ok"})"));
    BOOST_TEST(client.get("/readyz").json() == json::parse(R"({"status":"ok"})"));
    auto page = client.get("/");
    BOOST_TEST(page.status == 200);
    BOOST_TEST(page.header("Content-Type").starts_with("text/html"));
    BOOST_TEST(page.body.find("EventSource") != std::string::npos);
    auto m = client.get("/metrics");
    BOOST_TEST(m.header("Content-Type").starts_with("text/plain"));
    BOOST_TEST(m.body.find("buzzer_http_requests_total") != std::string::npos);
    static const std::regex build(
        "buzzer_build_info\\{version=\"[0-9.]+\",commit=\"([0-9a-f]{12}\\+?|unknown)\","
        "options=\"[^\"]+\",sqlite=\"3\\.[0-9.]+\",openssl=\"3\\.[0-9.]+\","
        "libpq=\"[0-9.]+\"\\} 1\n");
    BOOST_TEST(std::regex_search(m.body, build), m.body);
    // The store's histograms have counted the write of /readyz and its fsync.
    BOOST_TEST(metric(client, "buzzer_store_write_seconds_count") >= 1);
    // Unless writes are not synced at all (--synchronous normal).
    if (synchronous_normal())
        BOOST_TEST(metric(client, "buzzer_store_sync_seconds_count") == 0);
    else
        BOOST_TEST(metric(client, "buzzer_store_sync_seconds_count") >= 1);
    BOOST_TEST(m.body.find("buzzer_store_sync_seconds_bucket{le=\"+Inf\"}") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(the_server_runs_with_the_flags_of_the_run) { check_flags_of_the_run(server); }

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_CASE(public_url_makes_every_link_absolute) {
    server_process server{server_options{.args = {"--public-url", "https://api.example.com/"}}};
    http_client client{server.port()};
    auto r = client.post_json("/operations", R"({"kind":"echo"})", {{"Prefer", "wait=10"}});
    BOOST_TEST(r.status == 303);
    auto id = str(r.json().as_object(), "id");
    BOOST_TEST(r.header("Location") == "https://api.example.com/operations/" + id);
    for (const auto& l : r.json().as_object().at("links").as_array())
        BOOST_TEST(str(l.as_object(), "href").starts_with("https://api.example.com/operations/"));
    auto a = client.post_json("/operations", R"({"kind":"sleep","input":{"seconds":30}})");
    BOOST_TEST(a.header("Location") ==
               "https://api.example.com/operations/" + str(a.json().as_object(), "id") + "/status");
    BOOST_TEST(a.header("Operation-Location") == a.header("Location"));
    client.post_json("/operations", R"({"kind":"echo"})");
    auto list = client.get("/operations?limit=1").json().as_object();
    BOOST_TEST(str(list, "next").starts_with("https://api.example.com/operations?"));
}
