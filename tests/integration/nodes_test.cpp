// Many nodes on one PostgreSQL database (API.md, "Many nodes on PostgreSQL"): real buzzer
// servers on a private cluster that the test process starts, real HTTP, real kill -9.
#define BOOST_TEST_MODULE integration_nodes
#include <atomic>
#include <boost/test/unit_test.hpp>
#include <latch>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <thread>

#include "integration/common.hpp"
#include "support/pg_cluster.hpp"
#include "support/sse_client.hpp"

using namespace buzzer::test;
namespace json = boost::json;
using namespace std::chrono_literals;

namespace {

std::string str(const json::object& o, std::string_view key) {
    return std::string(o.at(key).as_string());
}

/// Seconds without a heart-beat after which the others take a node for dead.
constexpr int node_timeout_s = 3;

/// Nodes on one fresh database of the shared cluster, each named by the test.
class nodes {
  public:
    explicit nodes(std::string_view database) : uri_(fresh_pg_database(database)) {}

    server_process& start(const std::string& name, std::vector<std::string> extra = {}) {
        std::vector<std::string> args{"--node-id", name, "--node-timeout",
                                      std::to_string(node_timeout_s)};
        args.insert(args.end(), extra.begin(), extra.end());
        auto node =
            std::make_unique<server_process>(server_options{.database = uri_, .args = args});
        auto& started = *node;
        by_name_[name] = std::move(node);
        return started;
    }
    server_process& operator[](const std::string& name) { return *by_name_.at(name); }
    unsigned short port(const std::string& name) { return by_name_.at(name)->port(); }
    const std::string& uri() const { return uri_; }

  private:
    std::string uri_;
    std::map<std::string, std::unique_ptr<server_process>> by_name_;
};

/// The ids of `events`, checked to be decimal integers that strictly increase.
std::vector<long long> increasing_ids(const std::vector<sse_event>& events) {
    std::vector<long long> ids;
    for (const auto& e : events) {
        BOOST_TEST_REQUIRE(e.id.has_value(), "an event of type " << e.type << " has no id");
        ids.push_back(std::stoll(*e.id));
        if (ids.size() > 1)
            BOOST_TEST(ids[ids.size() - 2] < ids.back(),
                       "event ids " << ids[ids.size() - 2] << " then " << ids.back());
    }
    return ids;
}

/// Waits until every operation of `ids` has succeeded, read on `c`; returns their
/// representations by id. Fails the test naming those lost (404) or not succeeded.
std::map<std::string, json::object> wait_all_succeeded(http_client& c,
                                                       const std::vector<std::string>& ids,
                                                       std::chrono::seconds deadline) {
    std::map<std::string, json::object> done;
    std::vector<std::string> left = ids, lost, failed;
    bool const all = wait_until(
        [&] {
            std::vector<std::string> still;
            for (const auto& id : left) {
                auto r = c.get("/operations/" + id + "/status");
                if (r.status == 404) {
                    lost.push_back(id);
                    continue;
                }
                if (r.status != 200 && r.status != 303) {  // a node that is not ready yet
                    still.push_back(id);
                    continue;
                }
                auto op = r.json().as_object();
                auto const status = str(op, "status");
                if (status == "succeeded")
                    done[id] = op;
                else if (status == "pending" || status == "running")
                    still.push_back(id);
                else
                    failed.push_back(id + " " + r.body);
            }
            left = std::move(still);
            return left.empty();
        },
        deadline, 100ms);
    BOOST_TEST(lost.empty(), lost.size() << " operations answered 202 are lost, the first "
                                         << (lost.empty() ? "" : lost.front()));
    BOOST_TEST(failed.empty(), failed.size() << " did not succeed, the first "
                                             << (failed.empty() ? "" : failed.front()));
    BOOST_TEST(
        all, left.size() << " still unfinished, the first " << (left.empty() ? "" : left.front()));
    return done;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(many_nodes)

BOOST_AUTO_TEST_CASE(any_node_answers_and_streams_an_operation_submitted_on_another) {
    nodes n("nodes_any");
    n.start("a");
    n.start("b");
    n.start("c");
    http_client a(n.port("a")), b(n.port("b")), c(n.port("c"));
    auto id = submit(a, R"({"kind":"sleep","input":{"seconds":1,"steps":4}})");
    // Live on b, wherever the job runs.
    sse_stream stream(n.port("b"), "/operations/" + id + "/status");
    BOOST_TEST_REQUIRE(stream.status() == 200);
    auto events = stream.read_until_end(30s);
    BOOST_TEST_REQUIRE(stream.ended());
    increasing_ids(events);
    std::vector<std::string> types;
    for (const auto& e : events) types.push_back(e.type);
    std::vector<std::string> const expected{"pending",  "running",  "progress", "progress",
                                            "progress", "progress", "completed"};
    BOOST_TEST(types == expected, boost::test_tools::per_element());

    auto r = c.get("/operations/" + id + "/status");
    BOOST_TEST(r.status == 303);
    BOOST_TEST(r.header("Location") == "/operations/" + id);
    auto result = c.get("/operations/" + id);
    BOOST_TEST(result.status == 200);
    BOOST_TEST(result.json() == json::parse(R"({"slept":1})"));
    // Replayed on c after the end: the same events, then 204 at the terminal one.
    sse_stream replay(n.port("c"), "/operations/" + id + "/status");
    auto replayed = replay.read_until_end(10s);
    BOOST_TEST(replayed.size() == events.size());
    sse_stream past(n.port("a"), "/operations/" + id + "/status", events.back().id);
    BOOST_TEST(past.status() == 204);

    BOOST_TEST(b.del("/operations/" + id).status == 204);
    BOOST_TEST(a.get("/operations/" + id + "/status").status == 404);
    BOOST_TEST(c.get("/operations/" + id).status == 404);
}

BOOST_AUTO_TEST_CASE(a_cancel_on_one_node_stops_the_job_running_on_another) {
    nodes n("nodes_cancel");
    n.start("a");
    http_client a(n.port("a"));
    // Only a is up: the job runs there.
    auto id = submit(a, R"({"kind":"sleep","input":{"seconds":120,"steps":120}})");
    wait_for_progress(a, id);
    n.start("b");
    http_client b(n.port("b"));
    auto r = b.post_json("/operations/" + id + "/cancel", "");
    BOOST_TEST_REQUIRE(r.status == 202, r.status << " " << r.body);
    auto op = wait_for_status(b, id, "canceled", 15s);
    BOOST_TEST(op.at("attempt").as_int64() == 1);
    BOOST_TEST(str(status_of(a, id), "status") == "canceled");
}

BOOST_AUTO_TEST_CASE(two_nodes_racing_on_one_idempotency_key_make_one_operation) {
    nodes n("nodes_idempotency");
    n.start("a");
    n.start("b");
    constexpr int keys = 25;
    // Boost.Test's macros are for the main thread only: a racer returns what it got and the
    // checks come after the join.
    struct answer {
        std::string id, refused;
    };
    std::vector<answer> on_a(keys), on_b(keys);
    auto race = [&](const std::string& node, int key) -> answer {
        http_client c(n.port(node));
        auto const body = R"({"kind":"echo","input":)" + std::to_string(key) + "}";
        // A loser may get 409 while the winner commits: it retries, and gets the replay.
        for (int tries = 0; tries < 50; ++tries) {
            auto r = c.post_json("/operations", body,
                                 {{"Idempotency-Key", "race-" + std::to_string(key)}});
            if (r.status == 409) continue;
            if (r.status != 202) return {{}, std::to_string(r.status) + " " + r.body};
            return {str(r.json().as_object(), "id"), {}};
        }
        return {{}, "409 fifty times"};
    };
    for (int key = 0; key < keys; ++key) {
        std::latch go(2);
        std::thread b([&] {
            go.arrive_and_wait();
            on_b[key] = race("b", key);
        });
        go.arrive_and_wait();
        on_a[key] = race("a", key);
        b.join();
    }
    std::set<std::string> distinct;
    for (int key = 0; key < keys; ++key) {
        BOOST_TEST(on_a[key].refused.empty(), "key " << key << " on a: " << on_a[key].refused);
        BOOST_TEST(on_b[key].refused.empty(), "key " << key << " on b: " << on_b[key].refused);
        BOOST_TEST(!on_a[key].id.empty());
        BOOST_TEST(on_a[key].id == on_b[key].id, "key " << key);
        distinct.insert(on_a[key].id);
    }
    BOOST_TEST(distinct.size() == static_cast<std::size_t>(keys));
    http_client a(n.port("a"));
    auto list = a.get("/operations?limit=500");
    BOOST_TEST_REQUIRE(list.status == 200);
    BOOST_TEST(list.json().at("operations").as_array().size() == static_cast<std::size_t>(keys));
}

BOOST_AUTO_TEST_CASE(a_kill9_under_load_loses_nothing_and_its_running_work_finishes_elsewhere) {
    nodes n("nodes_kill");
    n.start("a");
    std::vector<std::string> accepted;
    std::vector<std::string> on_a;  // running on a at the kill
    {
        http_client a(n.port("a"));
        for (int i = 0; i < 3; ++i)
            on_a.push_back(submit(a, R"({"kind":"sleep","input":{"seconds":8,"steps":8}})"));
        for (const auto& id : on_a) wait_for_progress(a, id);
    }
    n.start("b");
    n.start("c");

    // One client per node, submitting echoes and short sleeps until it is told to stop (or,
    // on a, until the kill cuts it).
    std::atomic<bool> stop{false}, killed{false};
    std::atomic<int> answered{0};
    std::vector<std::vector<std::string>> got(3), unexpected(3);
    std::vector<std::thread> clients;
    std::vector<std::string> const names{"a", "b", "c"};
    for (int i = 0; i < 3; ++i) {
        clients.emplace_back([&, i, port = n.port(names[i])] {
            http_client c(port, 10s);
            for (int k = 0; !stop; ++k) {
                auto const body =
                    k % 2 == 0
                        ? R"({"kind":"echo","input":")" + names[i] + std::to_string(k) + "\"}"
                        : R"({"kind":"sleep","input":{"seconds":0.2},"max_attempts":10})";
                try {
                    auto r = c.post_json("/operations", body);
                    if (r.status != 202) {
                        unexpected[i].push_back(std::to_string(r.status) + " " + r.body);
                        return;
                    }
                    got[i].push_back(str(r.json().as_object(), "id"));
                    ++answered;
                } catch (const std::exception& e) {
                    if (!killed || i != 0) unexpected[i].push_back(e.what());
                    return;
                }
            }
        });
    }
    BOOST_TEST_REQUIRE(wait_until([&] { return answered >= 60; }, 30s));
    killed = true;
    n["a"].kill9();
    int const at_kill = answered;
    BOOST_TEST(wait_until([&] { return answered >= at_kill + 150; }, 30s));
    stop = true;
    for (auto& t : clients) t.join();
    for (int i = 0; i < 3; ++i) {
        for (const auto& what : unexpected[i])
            BOOST_ERROR("client on " << names[i] << ": " << what);
        accepted.insert(accepted.end(), got[i].begin(), got[i].end());
    }
    BOOST_TEST_MESSAGE(accepted.size() << " operations answered 202, " << got[0].size()
                                       << " of them by the node killed");

    http_client c(n.port("c"));
    auto const done = wait_all_succeeded(c, on_a, 60s);
    for (const auto& [id, op] : done)
        BOOST_TEST(op.at("attempt").as_int64() == 2, id << " ran " << op.at("attempt") << " times");
    wait_all_succeeded(c, accepted, 60s);
    bool const taken_over = n["b"].log_contents().find("took over") != std::string::npos ||
                            n["c"].log_contents().find("took over") != std::string::npos;
    BOOST_TEST(taken_over, "neither b nor c logged a take-over");
}

BOOST_AUTO_TEST_CASE(a_stream_resumed_on_another_node_after_a_kill9_has_no_gap_and_no_duplicate) {
    nodes n("nodes_resume");
    n.start("a");
    http_client a(n.port("a"));
    auto id = submit(a, R"({"kind":"sleep","input":{"seconds":4,"steps":8}})");
    n.start("b");
    std::vector<sse_event> seen;
    {
        sse_stream first(n.port("a"), "/operations/" + id + "/status");
        while (seen.size() < 4) {  // pending, running and two steps
            auto e = first.next_event(20s);
            BOOST_TEST_REQUIRE(e.has_value(), "the stream on a ended after " << seen.size());
            seen.push_back(*e);
        }
        n["a"].kill9();
    }
    auto const cut_at = seen.size();
    sse_stream resumed(n.port("b"), "/operations/" + id + "/status", seen.back().id);
    BOOST_TEST_REQUIRE(resumed.status() == 200);
    for (auto& e : resumed.read_until_end(60s)) seen.push_back(e);
    BOOST_TEST_REQUIRE(resumed.ended());
    BOOST_TEST(seen.back().type == "completed");
    BOOST_TEST(seen[cut_at].type == "pending", "after the take-over: " << seen[cut_at].type);

    // What the client got across both nodes is exactly what the database holds.
    sse_stream whole(n.port("b"), "/operations/" + id + "/status");
    auto const all = whole.read_until_end(10s);
    auto const got = increasing_ids(seen);
    BOOST_TEST(got == increasing_ids(all), boost::test_tools::per_element());
    http_client b(n.port("b"));
    BOOST_TEST(status_of(b, id).at("attempt").as_int64() == 2);
}

BOOST_AUTO_TEST_CASE(nodes_cut_from_the_database_answer_503_and_recover) {
    nodes n("nodes_outage");
    n.start("a");
    n.start("b");
    http_client a(n.port("a")), b(n.port("b"));
    std::vector<std::string> running;
    for (int i = 0; i < 4; ++i)
        running.push_back(submit(i % 2 ? b : a, R"({"kind":"sleep","input":{"seconds":3}})"));
    for (const auto& id : running) wait_for_status(a, id, "running");

    auto& cluster = shared_pg_cluster();
    cluster.stop();
    auto const stopped = std::chrono::steady_clock::now();
    for (auto* c : {&a, &b}) {
        BOOST_TEST(wait_until([&] { return c->get("/readyz").status == 503; }, 15s));
        BOOST_TEST(c->get("/healthz").status == 200);
        auto r = c->post_json("/operations", R"({"kind":"echo","input":1})");
        BOOST_TEST_REQUIRE(r.status == 503, r.status << " " << r.body);
        BOOST_TEST(r.header("Content-Type") == "application/problem+json");
        BOOST_TEST(r.body.find("/problems/database-unavailable") != std::string::npos, r.body);
        BOOST_TEST(!r.header("Retry-After").empty());
    }
    // Down for longer than the node timeout, while the jobs end: no node is taken for dead.
    auto const outage_end = stopped + std::chrono::seconds(node_timeout_s + 2);
    BOOST_TEST(
        wait_until([&] { return std::chrono::steady_clock::now() >= outage_end; }, 30s, 100ms));
    cluster.start();
    for (auto* c : {&a, &b})
        BOOST_TEST(wait_until([&] { return c->get("/readyz").status == 200; }, 30s));
    // The jobs that ended during the outage recorded their outcomes, in their first attempt.
    auto const done = wait_all_succeeded(a, running, 30s);
    for (const auto& [id, op] : done) BOOST_TEST(op.at("attempt").as_int64() == 1, id);
    auto id = submit(b, R"({"kind":"echo","input":"back"})");
    wait_for_status(a, id, "succeeded");
}

BOOST_AUTO_TEST_CASE(a_tenants_submit_rate_holds_for_all_nodes_together) {
    nodes n("nodes_rate");
    temp_dir dir("buzzer-nodes-rate-");
    // 10 submissions a second, 2 at once, for the tenant, whichever node takes them.
    auto config = dir.write_file("buzzer.json", R"({"auth": {},
        "tenants": {"metered": {"submit_rate": 10, "submit_burst": 2}}})");
    auto made = run_buzzer(
        {"keys", "create", "--database", n.uri(), "--tenant", "metered", "--role", "write"});
    BOOST_TEST_REQUIRE(made.exit_code == 0, made.err);
    const headers bearer{{"Authorization", "Bearer " + made.out.substr(0, made.out.find('\n'))}};
    n.start("a", {"--config", config.string()});
    n.start("b", {"--config", config.string()});
    http_client a(n.port("a")), b(n.port("b"));
    // Both nodes as fast as they answer, for 4 s: 2 + 4 x 10 = 42 admitted in all, give or
    // take what half a second of sharing lets through; each node on its own would admit 42.
    int admitted = 0, refused = 0;
    auto const start = std::chrono::steady_clock::now();
    for (int k = 0; std::chrono::steady_clock::now() - start < 4s; ++k) {
        auto r = (k % 2 ? b : a).post_json("/operations", R"({"kind":"echo"})", bearer);
        if (r.status == 202)
            ++admitted;
        else if (r.status == 429)
            ++refused;
        else
            BOOST_FAIL(r.status << " " << r.body);
    }
    BOOST_TEST_MESSAGE(admitted << " submissions admitted, " << refused << " refused over 4 s");
    BOOST_TEST(admitted >= 30);
    BOOST_TEST(admitted <= 60);
    BOOST_TEST(refused > 0);
}

BOOST_AUTO_TEST_CASE(readers_resuming_on_random_nodes_see_every_event_once_in_order) {
    // Three nodes write the events of many jobs at once; readers of one /events stream over
    // all of them hop from node to node, each reconnect resuming at the last id it got.
    nodes n("nodes_order");
    std::vector<std::string> const names{"a", "b", "c"};
    for (const auto& name : names) n.start(name);
    std::vector<std::string> ids;
    {
        std::vector<http_client> c;
        for (const auto& name : names) c.emplace_back(n.port(name));
        for (int i = 0; i < 60; ++i)
            ids.push_back(submit(c[i % 3], R"({"kind":"sleep","input":{"seconds":3,"steps":30}})"));
    }
    std::string target = "/events?";
    for (const auto& id : ids) target += (target.back() == '?' ? "operation=" : "&operation=") + id;

    constexpr int readers = 4;
    std::vector<std::vector<sse_event>> seen(readers);
    std::vector<int> reconnects(readers, 0);
    std::vector<std::thread> threads;
    for (int r = 0; r < readers; ++r) {
        threads.emplace_back([&, r] {
            std::mt19937 random(1000 + r);
            std::optional<std::string> last;
            auto const deadline = std::chrono::steady_clock::now() + 90s;
            while (std::chrono::steady_clock::now() < deadline) {
                auto const& node = names[random() % names.size()];
                sse_stream s(n.port(node), target, last);
                if (s.status() == 204) return;  // at or past every terminal event
                if (s.status() != 200) {
                    sse_event refused;
                    refused.type = "status " + std::to_string(s.status());
                    seen[r].push_back(refused);
                    return;
                }
                ++reconnects[r];
                auto const take = 1 + random() % 80;
                for (unsigned k = 0; k < take; ++k) {
                    auto e = s.next_event(20s);
                    if (!e) break;
                    seen[r].push_back(*e);
                    last = e->id;
                }
                if (s.ended()) return;
            }
        });
    }
    for (auto& t : threads) t.join();

    sse_stream whole(n.port("a"), target);
    auto const all = whole.read_until_end(30s);
    BOOST_TEST_REQUIRE(whole.ended());
    auto const expected = increasing_ids(all);
    BOOST_TEST(
        std::count_if(all.begin(), all.end(), [](auto& e) { return e.type == "completed"; }) == 60);
    for (int r = 0; r < readers; ++r) {
        BOOST_TEST_MESSAGE("reader " << r << ": " << seen[r].size() << " events over "
                                     << reconnects[r] << " connections");
        BOOST_TEST(reconnects[r] > 3);
        auto const got = increasing_ids(seen[r]);
        BOOST_TEST(got == expected, "reader " << r << " got " << got.size() << " of "
                                              << expected.size() << " events");
    }
}

BOOST_AUTO_TEST_SUITE_END()
