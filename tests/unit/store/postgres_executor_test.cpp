// The PostgreSQL executor on a private cluster: group commit, a failing write undone alone,
// events of two nodes delivered to each once and in id order, and a database that goes away
// and comes back.
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/strand.hpp>
#include <boost/test/unit_test.hpp>
#include <mutex>
#include <thread>

#include "runtime/embedded.hpp"
#include "store/postgres/connection.hpp"
#include "store/postgres/executor.hpp"
#include "support/pg_cluster.hpp"
#include "support/run_coroutine.hpp"
#include "support/wait.hpp"

using namespace buzzer;
namespace asio = boost::asio;
namespace pg = buzzer::store::postgres;

namespace {

pg::executor::settings schema(std::string uri) {
    pg::executor::settings s;
    s.uri = std::move(uri);
    s.poll_interval = std::chrono::milliseconds(200);
    for (const auto& m : embedded::postgresql_migrations())
        s.migrations.push_back({m.name, m.content});
    return s;
}

// Inserts an operation row `id` and one event of it.
void insert_op(pg::write_context& w, const std::string& id) {
    const pg::param p[] = {pg::text_param(id)};
    w.db.query(
        "INSERT INTO operations (id, tenant, kind, status, input, priority, max_attempts, "
        "timeout_s, created_at) VALUES ($1, 'default', 'echo', 'pending', 'null', 0, 1, 1, 0)",
        p);
    w.add_event(id, "pending", "{}");
}

// An executor that keeps every event it is handed.
struct recording {
    std::mutex m;
    std::vector<core::event> published;
    pg::executor db;
    explicit recording(const std::string& uri, std::function<void(std::string_view)> signals = {})
        : db(schema(uri)) {
        db.on_signal = std::move(signals);
        db.on_commit = [this](std::vector<core::event> events) {
            std::lock_guard lock(m);
            for (auto& e : events) published.push_back(std::move(e));
        };
        db.open();
    }
    std::vector<std::int64_t> seqs() {
        std::lock_guard lock(m);
        std::vector<std::int64_t> out;
        for (const auto& e : published) out.push_back(e.seq);
        return out;
    }
};

// Runs `body(i)` for i in [0, n) at once over two threads.
template <class Body>
void run_concurrently(int n, Body body) {
    test::run_coroutine(
        [&]() -> asio::awaitable<void> {
            auto ex = co_await asio::this_coro::executor;
            for (int i = 0; i < n; ++i)
                asio::co_spawn(asio::make_strand(ex), body(i), asio::detached);
            co_return;
        },
        2);
}

std::vector<std::int64_t> one_to(std::int64_t n) {
    std::vector<std::int64_t> out;
    for (std::int64_t i = 1; i <= n; ++i) out.push_back(i);
    return out;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(postgres_executor)

BOOST_AUTO_TEST_CASE(concurrent_writes_share_commits_and_events_come_in_order) {
    recording r(test::fresh_pg_database("exec_group"));
    constexpr int n = 300;
    std::atomic<int> done{0};
    run_concurrently(n, [&](int i) -> asio::awaitable<void> {
        auto id = "op" + std::to_string(i);
        co_await r.db.write([&](pg::write_context& w) { insert_op(w, id); });
        ++done;
    });
    BOOST_TEST(done.load() == n);
    BOOST_TEST(r.seqs() == one_to(n), boost::test_tools::per_element());
    BOOST_TEST(r.db.published_seq() == n);
    BOOST_TEST(r.db.stats().writes.load() == static_cast<std::uint64_t>(n));
    BOOST_TEST(r.db.stats().batches.load() < static_cast<std::uint64_t>(n));
}

BOOST_AUTO_TEST_CASE(a_failing_write_in_a_shared_batch_is_undone_alone) {
    recording r(test::fresh_pg_database("exec_isolated"));
    constexpr int n = 60;
    std::atomic<int> failed{0}, done{0};
    run_concurrently(n, [&](int i) -> asio::awaitable<void> {
        // Every tenth write inserts an id that another write takes too.
        auto id = i % 10 == 0 ? std::string("same") : "op" + std::to_string(i);
        try {
            co_await r.db.write([&](pg::write_context& w) { insert_op(w, id); });
            ++done;
        } catch (const pg::pg_error& e) {
            if (e.unique_violation()) ++failed;
        }
    });
    BOOST_TEST(done.load() == n - 5);
    BOOST_TEST(failed.load() == 5);
    BOOST_TEST(r.seqs() == one_to(n - 5), boost::test_tools::per_element());
    pg::connection db(schema(test::shared_pg_cluster().uri("exec_isolated")).uri);
    BOOST_TEST(db.query("SELECT count(*) FROM operations").int64(0, 0) == n - 5);
    BOOST_TEST(db.query("SELECT count(*) FROM events").int64(0, 0) == n - 5);
}

BOOST_AUTO_TEST_CASE(each_node_gets_every_nodes_events_once_in_id_order) {
    const auto uri = test::fresh_pg_database("exec_nodes");
    recording a(uri), b(uri);
    constexpr int n = 400;
    run_concurrently(n, [&](int i) -> asio::awaitable<void> {
        auto id = "op" + std::to_string(i);
        auto& node = i % 2 ? a.db : b.db;
        co_await node.write([&](pg::write_context& w) { insert_op(w, id); });
    });
    for (auto* r : {&a, &b}) {
        BOOST_TEST(
            test::wait_until([&] { return r->seqs().size() >= n; }, std::chrono::seconds(10)));
        BOOST_TEST(r->seqs() == one_to(n), boost::test_tools::per_element());
    }
    BOOST_TEST(a.db.pool().notifications.load() > 0);
}

BOOST_AUTO_TEST_CASE(a_quiet_listener_keeps_hearing_and_signals_reach_every_node) {
    const auto uri = test::fresh_pg_database("exec_quiet");
    std::mutex m;
    std::vector<std::string> heard;
    recording a(uri), b(uri, [&](std::string_view s) {
        std::lock_guard lock(m);
        heard.emplace_back(s);
    });
    const auto connects = a.db.pool().connects.load();
    // Several poll intervals with nothing else on the connection: its pings are heard, so it
    // is not made again.
    BOOST_TEST(!test::wait_until([&] { return a.db.pool().connects.load() != connects; },
                                 std::chrono::seconds(1)));
    test::run_coroutine([&]() -> asio::awaitable<void> {
        co_await a.db.write([](pg::write_context& w) {
            w.signal("w");
            w.signal("w");
            w.signal("c 01ABC");
        });
    });
    BOOST_TEST(test::wait_until(
        [&] {
            std::lock_guard lock(m);
            return heard.size() >= 2;
        },
        std::chrono::seconds(5)));
    std::lock_guard lock(m);
    BOOST_TEST(heard == (std::vector<std::string>{"w", "c 01ABC"}),
               boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(a_database_that_goes_away_fails_writes_until_it_is_back) {
    auto& cluster = test::shared_pg_cluster();
    recording r(test::fresh_pg_database("exec_outage"));
    auto write = [&](std::string id) {
        return test::run_coroutine([&]() -> asio::awaitable<void> {
            co_await r.db.write([&](pg::write_context& w) { insert_op(w, id); });
        });
    };
    write("before");
    cluster.stop();
    try {
        write("during");
        BOOST_FAIL("a write succeeded without a database");
    } catch (const store::database_error& e) {
        BOOST_TEST(e.unavailable());
    }
    BOOST_TEST(!r.db.reachable());
    cluster.start();
    write("after");
    BOOST_TEST(r.db.reachable());
    BOOST_TEST(test::wait_until([&] { return r.seqs().size() == 2; }, std::chrono::seconds(10)));
    BOOST_TEST(r.seqs() == one_to(2), boost::test_tools::per_element());
}

// A last statement sent with the COMMIT: its rows come back and the transaction is durable; a
// statement or a COMMIT that fails leaves nothing behind and the connection usable.
BOOST_AUTO_TEST_CASE(a_statement_sent_with_its_commit_commits_or_leaves_nothing) {
    const auto uri = test::fresh_pg_database("exec_pipeline");
    pg::connection db(uri), other(uri);
    db.exec(
        "CREATE TABLE t (v int UNIQUE DEFERRABLE INITIALLY DEFERRED);"
        "INSERT INTO t VALUES (1)");
    auto count = [&] { return other.query("SELECT count(*) FROM t").int64(0, 0); };
    const pg::param two[] = {pg::int_param(2)};
    {
        pg::transaction tx(db);
        auto r = tx.commit_with("INSERT INTO t VALUES ($1) RETURNING v * 10", two);
        BOOST_TEST(r.int64(0, 0) == 20);
    }
    BOOST_TEST(count() == 2);
    const pg::param zero[] = {pg::int_param(0)};
    {
        pg::transaction tx(db);
        db.query("INSERT INTO t VALUES (3)");
        try {
            tx.commit_with("SELECT 1 / $1::int", zero);
            BOOST_FAIL("a division by zero was committed");
        } catch (const pg::pg_error& e) {
            BOOST_TEST(e.sqlstate() == "22012");
        }
    }
    BOOST_TEST(count() == 2);
    {
        pg::transaction tx(db);
        try {
            tx.commit_with("INSERT INTO t VALUES ($1) RETURNING v", two);  // refused by COMMIT
            BOOST_FAIL("a duplicate was committed");
        } catch (const pg::pg_error& e) {
            BOOST_TEST(e.unique_violation());
        }
    }
    BOOST_TEST(count() == 2);
    BOOST_TEST(db.ok());
    BOOST_TEST(db.query("SELECT count(*) FROM t").int64(0, 0) == 2);
}

BOOST_AUTO_TEST_SUITE_END()
