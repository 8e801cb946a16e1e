// What the PostgreSQL backend adds to the store's interface for many nodes: an idempotency key
// raced by two nodes makes one operation, and an attempt another node took over is fenced off.
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/strand.hpp>
#include <boost/test/unit_test.hpp>
#include <mutex>
#include <ostream>

#include "core/lifecycle.hpp"
#include "core/ulid.hpp"
#include "runtime/embedded.hpp"
#include "store/postgres/connection.hpp"
#include "store/store.hpp"
#include "support/pg_cluster.hpp"
#include "support/run_coroutine.hpp"

namespace buzzer::core {
// How Boost.Test prints a status (defined in interface_test.cpp).
std::ostream& operator<<(std::ostream& out, status s);
}  // namespace buzzer::core

using namespace buzzer;
namespace asio = boost::asio;
namespace lc = buzzer::core::lifecycle;

namespace {

std::unique_ptr<store::store> node(const std::string& uri, std::string id) {
    store::settings s;
    s.path = uri;
    s.node_id = std::move(id);
    for (const auto& f : embedded::postgresql_migrations())
        s.migrations.push_back({f.name, f.content});
    auto db = store::make_postgres_store(std::move(s));
    db->open(core::now_ms());
    return db;
}

lc::step submission(bool start = false) {
    core::operation op;
    op.created_at = core::now_ms();
    op.id = core::make_ulid(op.created_at);
    op.kind = "echo";
    op.input = "{}";
    op.max_attempts = 3;
    return lc::apply(std::move(op), lc::submitted{op.created_at, start});
}

// Submits with idempotency key `key`; keeps what it came to in `out` (parameters, not lambda
// captures: the coroutine outlives the loop that spawns it).
asio::awaitable<void> submit_with_key(store::store* db, std::string key, std::mutex* m,
                                      std::vector<store::submit_result>* out) {
    auto step = submission();
    store::idempotency_key k{std::move(key), R"({"n":1})"};
    auto r = co_await db->submit(std::move(step.op), std::move(step.events), std::move(k));
    std::lock_guard lock(*m);
    out->push_back(std::move(r));
}

}  // namespace

BOOST_AUTO_TEST_SUITE(postgres_store)

BOOST_AUTO_TEST_CASE(two_nodes_racing_on_one_idempotency_key_make_one_operation) {
    const auto uri = test::fresh_pg_database("store_race");
    auto a = node(uri, "node-a");
    auto b = node(uri, "node-b");
    constexpr int rounds = 20, per_node = 4;
    std::vector<std::vector<store::submit_result>> results(rounds);
    std::mutex m;
    test::run_coroutine(
        [&]() -> asio::awaitable<void> {
            auto ex = co_await asio::this_coro::executor;
            for (int round = 0; round < rounds; ++round) {
                for (int i = 0; i < 2 * per_node; ++i) {
                    auto* db = i % 2 ? a.get() : b.get();
                    asio::co_spawn(
                        asio::make_strand(ex),
                        submit_with_key(db, "key-" + std::to_string(round), &m, &results[round]),
                        asio::detached);
                }
            }
            co_return;
        },
        2);
    store::postgres::connection db(uri);
    BOOST_TEST(db.query("SELECT count(*) FROM operations").int64(0, 0) == rounds);
    for (const auto& round : results) {
        BOOST_TEST(round.size() == static_cast<std::size_t>(2 * per_node));
        int accepted = 0;
        std::string id;
        for (const auto& r : round) {
            if (r.kind == store::submit_result::accepted) {
                ++accepted;
                id = r.op.id;
            }
        }
        BOOST_TEST(accepted == 1);
        for (const auto& r : round)
            if (r.kind == store::submit_result::replayed) BOOST_TEST(r.operation_id == id);
    }
}

BOOST_AUTO_TEST_CASE(an_attempt_another_node_took_over_is_fenced_off) {
    const auto uri = test::fresh_pg_database("store_fence");
    auto a = node(uri, "node-a");
    const store::tenant_id home(core::default_tenant);
    test::run_coroutine([&]() -> asio::awaitable<void> {
        auto step = submission(true);
        auto r = co_await a->submit(std::move(step.op), std::move(step.events), std::nullopt);
        auto op = r.op;
        BOOST_TEST(op.state == core::status::running);
        // Progress of the attempt is written while it is this node's.
        auto report = lc::apply(op, lc::progressed{10, "on"});
        std::vector<store::change> one{{report.op, report.events}};
        BOOST_TEST((co_await a->record(one))[0].written);
        // Another node takes it over (its next attempt).
        store::postgres::connection db(uri);
        const store::postgres::param id[] = {store::postgres::text_param(op.id)};
        db.query("UPDATE operations SET node = 'node-b', attempt = attempt + 1 WHERE id = $1", id);
        auto done = lc::apply(report.op, lc::succeeded{core::now_ms()});
        const core::result_body body{"{}", "application/json"};
        std::vector<store::change> two{{done.op, done.events, &body}};
        BOOST_TEST(!(co_await a->record(two))[0].written);
        auto loaded = co_await a->load(home, op.id);
        BOOST_TEST(loaded->state == core::status::running);
        BOOST_TEST(loaded->attempt == op.attempt + 1);
    });
}

BOOST_AUTO_TEST_SUITE_END()
