// The store's interface, exercised through store::store alone: the cases every backend must
// pass. The fixture opens the SQLite backend on a temporary database, or with
// BUZZER_TEST_STORE=postgresql the PostgreSQL backend on a new database of a private cluster
// (CTest runs the suite both ways).
#include <boost/asio/awaitable.hpp>
#include <boost/test/unit_test.hpp>
#include <cstdlib>
#include <mutex>
#include <ostream>

#include "core/lifecycle.hpp"
#include "core/ulid.hpp"
#include "runtime/embedded.hpp"
#include "store/store.hpp"
#include "support/pg_cluster.hpp"
#include "support/process.hpp"
#include "support/run_coroutine.hpp"

namespace buzzer::core {
// How Boost.Test prints a status in a failed check.
std::ostream& operator<<(std::ostream& out, status s) { return out << to_string(s); }
}  // namespace buzzer::core

using namespace buzzer;
namespace asio = boost::asio;
namespace lc = buzzer::core::lifecycle;

namespace {

// A store on a temporary database that keeps what it publishes.
struct backend {
    test::temp_dir dir;
    std::mutex m;
    std::vector<core::event> published;
    std::unique_ptr<store::store> db;
    store::recovery recovered;

    std::string database;  ///< the SQLite file or the PostgreSQL URI

    backend() {
        if (on_postgres()) {
            static int databases = 0;
            database = test::fresh_pg_database("iface_" + std::to_string(++databases));
        } else {
            database = (dir / "i.db").string();
        }
        reopen();
    }
    ~backend() {
        if (db) db->close();
    }

    static bool on_postgres() {
        const char* which = std::getenv("BUZZER_TEST_STORE");
        return which && std::string_view(which) == "postgresql";
    }

    // A store on the database; on PostgreSQL as the node `node` (the same node after reopen()).
    std::unique_ptr<store::store> make(std::string node = "node-a") const {
        store::settings s;
        s.path = database;
        if (!on_postgres()) {
            for (const auto& f : embedded::migrations())
                s.migrations.push_back({f.name, f.content});
            return store::make_sqlite_store(std::move(s));
        }
        s.node_id = std::move(node);
        for (const auto& f : embedded::postgresql_migrations())
            s.migrations.push_back({f.name, f.content});
        return store::make_postgres_store(std::move(s));
    }

    void reopen() {
        if (db) db->close();
        db = make();
        db->on_commit = [this](std::vector<core::event> events) {
            std::lock_guard lock(m);
            for (auto& e : events) published.push_back(std::move(e));
        };
        recovered = db->open(core::now_ms());
    }

    /// A second store on the same file, attached as another process (the keys command) would.
    std::unique_ptr<store::store> beside() {
        auto other = make("node-b");
        other->attach();
        return other;
    }

    template <class F>
    auto run(F f) {
        return test::run_coroutine(std::move(f));
    }
};

// The tenant of the operations of most cases (as in open mode).
const store::tenant_id home(core::default_tenant);

core::operation new_op(std::string kind = "echo", std::string tenant = "default") {
    core::operation op;
    op.tenant = std::move(tenant);
    op.created_at = core::now_ms();
    op.id = core::make_ulid(op.created_at);
    op.kind = std::move(kind);
    op.input = R"({"n":1})";
    op.max_attempts = 2;
    return op;
}

// Submits a new operation the way the API does; returns it as stored (row set).
asio::awaitable<core::operation> submit(store::store& db, bool start = false,
                                        std::optional<store::idempotency_key> key = {}) {
    auto step = lc::apply(new_op(), lc::submitted{core::now_ms(), start});
    auto r = co_await db.submit(std::move(step.op), std::move(step.events), std::move(key));
    co_return r.op;
}

// Submits a new operation of `kind` for `tenant`; what the submission came to. Views, so that
// literals make no temporaries in the callers' co_await expressions.
asio::awaitable<store::submit_result> submit_for(store::store& db, std::string_view tenant,
                                                 std::string_view kind = "echo",
                                                 std::optional<store::idempotency_key> key = {}) {
    auto step = lc::apply(new_op(std::string(kind), std::string(tenant)),
                          lc::submitted{core::now_ms(), false});
    co_return co_await db.submit(std::move(step.op), std::move(step.events), std::move(key));
}

std::vector<std::string> ids_in(const std::vector<core::operation>& ops) {
    std::vector<std::string> out;
    for (const auto& op : ops) out.push_back(op.id);
    return out;
}

// An API key record of `tenant`, made now.
store::api_key_record key_of(std::string id, std::string tenant,
                             core::role role = core::role::write) {
    store::api_key_record k;
    k.id = std::move(id);
    k.tenant = std::move(tenant);
    k.role = role;
    k.name = "ci";
    k.created_at = core::now_ms();
    return k;
}

std::vector<std::string> types_of(const std::vector<core::event>& events) {
    std::vector<std::string> out;
    for (const auto& e : events) out.push_back(e.type);
    return out;
}

using types = std::vector<std::string>;

// Named arguments: g++ 12 miscompiles braced lists inside co_await expressions.
template <class... Ids>
std::vector<std::string> ids_of(Ids... ids) {
    return {std::string(ids)...};
}

store::list_query canceled_query() {
    store::list_query q(home);
    q.statuses = {core::status::canceled};
    q.limit = 10;
    return q;
}

}  // namespace

BOOST_FIXTURE_TEST_SUITE(store_interface, backend)

BOOST_AUTO_TEST_CASE(a_submission_is_stored_with_its_events_and_published_in_order) {
    run([&]() -> asio::awaitable<void> {
        auto op = co_await submit(*db, true);
        BOOST_TEST(op.row > 0);
        auto loaded = co_await db->load(home, op.id);
        BOOST_REQUIRE(loaded);
        BOOST_TEST(loaded->state == core::status::running);
        BOOST_TEST(loaded->attempt == 1);
        auto events = co_await db->replay(home, ids_of(op.id), 0, db->published_seq(), 10);
        BOOST_TEST(types_of(events) == (types{"pending", "running"}),
                   boost::test_tools::per_element());
        BOOST_TEST(events[0].seq < events[1].seq);
        BOOST_TEST(db->published_seq() == events[1].seq);
    });
    std::lock_guard lock(m);
    BOOST_TEST(types_of(published) == (types{"pending", "running"}),
               boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(an_idempotency_key_replays_its_operation_and_refuses_another_body) {
    run([&]() -> asio::awaitable<void> {
        // Named: g++ 12 miscompiles temporaries made inside a co_await expression.
        std::optional<store::idempotency_key> key = store::idempotency_key{"k1", R"({"a":1.5})"};
        auto first = co_await submit(*db, false, std::move(key));
        // The same value written otherwise (as an older version stored numbers) is the same body.
        auto again = lc::apply(new_op(), lc::submitted{core::now_ms()});
        key = store::idempotency_key{"k1", R"({"a":1.5E0})"};
        auto r = co_await db->submit(std::move(again.op), std::move(again.events), std::move(key));
        BOOST_TEST(r.kind == store::submit_result::replayed);
        BOOST_TEST(r.operation_id == first.id);
        auto other = lc::apply(new_op(), lc::submitted{core::now_ms()});
        const auto other_id = other.op.id;
        key = store::idempotency_key{"k1", R"({"a":2})"};
        r = co_await db->submit(std::move(other.op), std::move(other.events), std::move(key));
        BOOST_TEST(r.kind == store::submit_result::key_reused);
        BOOST_TEST(!(co_await db->load(home, other_id)));  // nothing stored
    });
}

BOOST_AUTO_TEST_CASE(a_claim_starts_only_what_is_still_pending) {
    run([&]() -> asio::awaitable<void> {
        auto a = co_await submit(*db);
        auto b = co_await submit(*db);
        co_await db->cancel_pending(home, b.id);
        std::vector<store::claim> claims{{a.id, a.row}, {b.id, b.row}, {"x", 999}};
        auto started = co_await db->start_attempts(std::move(claims), core::now_ms());
        BOOST_REQUIRE(started.size() == 3u);
        BOOST_REQUIRE(started[0].op);
        BOOST_TEST(started[0].op->state == core::status::running);
        BOOST_TEST(started[0].op->attempt == 1);
        BOOST_TEST(!started[1].op);  // canceled meanwhile
        BOOST_TEST(!started[1].error);
        BOOST_TEST(!started[2].op);  // no such operation
        auto events = co_await db->replay(home, ids_of(a.id), 0, db->published_seq(), 10);
        BOOST_TEST(types_of(events) == (types{"pending", "running"}),
                   boost::test_tools::per_element());
    });
}

BOOST_AUTO_TEST_CASE(a_change_is_recorded_only_while_the_operation_runs) {
    run([&]() -> asio::awaitable<void> {
        auto op = co_await submit(*db, true);
        auto done = lc::apply(op, lc::succeeded{core::now_ms()});
        core::result_body body{"hello", "text/plain"};
        std::vector<store::change> changes{{done.op, done.events, &body}};
        auto r = co_await db->record(changes);
        BOOST_TEST(r[0].written);
        BOOST_TEST(!r[0].error);
        auto stored = co_await db->load_result(home, op.id);
        BOOST_REQUIRE(stored);
        BOOST_TEST(stored->op.state == core::status::succeeded);
        BOOST_REQUIRE(stored->result);
        BOOST_TEST(stored->result->body == "hello");
        BOOST_TEST(stored->result->media_type == "text/plain");
        // A second outcome of the same attempt comes too late: neither row nor event changes.
        auto late = lc::apply(op, lc::failed{core::now_ms(), "", "late"});
        std::vector<store::change> again{{late.op, late.events}};
        r = co_await db->record(again);
        BOOST_TEST(!r[0].written);
        BOOST_TEST((co_await db->load(home, op.id))->state == core::status::succeeded);
        auto events = co_await db->replay(home, ids_of(op.id), 0, db->published_seq(), 10);
        BOOST_TEST(types_of(events) == (types{"pending", "running", "completed"}),
                   boost::test_tools::per_element());
        auto ends = co_await db->stream_ends(home, ids_of(op.id, core::make_ulid(core::now_ms())));
        BOOST_TEST(ends[0].value() == events.back().seq);
        BOOST_TEST(!ends[1]);
    });
}

BOOST_AUTO_TEST_CASE(changes_recorded_together_are_each_written_or_skipped_on_their_own) {
    run([&]() -> asio::awaitable<void> {
        auto a = co_await submit(*db, true);
        auto b = co_await submit(*db, true);
        auto c = co_await submit(*db, true);
        auto c_done = lc::apply(c, lc::succeeded{core::now_ms()});
        std::vector<store::change> first{{c_done.op, c_done.events}};
        co_await db->record(first);
        // a: an outcome with a result; b: progress, then its outcome; c: over already.
        core::result_body body{std::string("\0\\x\"{", 5), "application/octet-stream"};
        auto a_done = lc::apply(a, lc::succeeded{core::now_ms()});
        auto b_step = lc::apply(b, lc::progressed{50, "half \"way\""});
        auto b_done = lc::apply(b_step.op, lc::failed{core::now_ms(), "", "no luck"});
        auto c_late = lc::apply(c, lc::failed{core::now_ms(), "", "late"});
        std::vector<store::change> changes{{a_done.op, a_done.events, &body},
                                           {b_step.op, b_step.events},
                                           {c_late.op, c_late.events}};
        auto r = co_await db->record(changes);
        BOOST_REQUIRE(r.size() == 3u);
        BOOST_TEST(r[0].written);
        BOOST_TEST(r[1].written);
        BOOST_TEST(!r[2].written);
        BOOST_TEST(!r[0].error);
        BOOST_TEST(!r[2].error);
        auto b_half = co_await db->load(home, b.id);
        BOOST_TEST(b_half->progress.value_or("").find("way") != std::string::npos);
        std::vector<store::change> same_row{{b_step.op, b_step.events}, {b_done.op, b_done.events}};
        r = co_await db->record(same_row);
        BOOST_TEST(r[0].written);
        BOOST_TEST(r[1].written);
        auto stored = co_await db->load_result(home, a.id);
        BOOST_REQUIRE(stored);
        BOOST_TEST(stored->op.state == core::status::succeeded);
        BOOST_REQUIRE(stored->result);
        BOOST_TEST(stored->result->body == body.body);
        BOOST_TEST(stored->result->media_type == body.media_type);
        BOOST_TEST((co_await db->load(home, b.id))->state == b_done.op.state);
        BOOST_TEST((co_await db->load(home, c.id))->state == core::status::succeeded);
        auto events = co_await db->replay(home, ids_of(c.id), 0, db->published_seq(), 10);
        BOOST_TEST(types_of(events) == (types{"pending", "running", "completed"}),
                   boost::test_tools::per_element());
    });
}

// The job's copy of a running operation predates a cancel request: writing its progress or
// handing it back at shutdown must not take the request back.
BOOST_AUTO_TEST_CASE(a_requested_cancel_survives_later_writes_of_the_job_and_a_restart) {
    run([&]() -> asio::awaitable<void> {
        auto op = co_await submit(*db, true);
        co_await db->request_cancel(home, op.id);
        BOOST_TEST((co_await db->load(home, op.id))->cancel_requested);
        auto report = lc::apply(op, lc::progressed{40, "on"});
        std::vector<store::change> one{{report.op, report.events}};
        BOOST_TEST((co_await db->record(one))[0].written);
        auto back = lc::apply(report.op, lc::handed_back{});
        std::vector<store::change> two{{back.op, back.events, nullptr, report.op.attempt}};
        BOOST_TEST((co_await db->record(two))[0].written);
        auto loaded = co_await db->load(home, op.id);
        BOOST_TEST(loaded->state == core::status::pending);
        BOOST_TEST(loaded->cancel_requested);
    });
    reopen();
    run([&]() -> asio::awaitable<void> {
        BOOST_TEST(recovered.pending.empty());  // canceled at open, not queued
        auto ops = co_await db->list(canceled_query());
        BOOST_TEST(ops.size() == 1u);
    });
}

BOOST_AUTO_TEST_CASE(open_abandons_what_a_crash_left_running_and_queues_what_is_pending) {
    std::string running_id, pending_id, last_id;
    run([&]() -> asio::awaitable<void> {
        running_id = (co_await submit(*db, true)).id;
        pending_id = (co_await submit(*db)).id;
        auto last = co_await submit(*db);
        std::vector<store::claim> claim{{last.id, last.row}};
        auto started = co_await db->start_attempts(claim, core::now_ms());
        auto second = lc::apply(*started[0].op, lc::failed{core::now_ms(), "", "once", true, 0});
        std::vector<store::change> c{{second.op, second.events}};
        co_await db->record(c);
        co_await db->start_attempts(claim, core::now_ms());  // attempt 2 of 2
        last_id = last.id;
    });
    reopen();
    BOOST_TEST(recovered.abandoned.size() == 2u);
    BOOST_TEST(recovered.pending.size() == 2u);  // the abandoned one with attempts left, and
    run([&]() -> asio::awaitable<void> {         // the one that never ran
        auto r = co_await db->load(home, running_id);
        BOOST_TEST(r->state == core::status::pending);
        BOOST_TEST(r->error.value().find("/problems/abandoned") != std::string::npos);
        BOOST_TEST((co_await db->load(home, pending_id))->state == core::status::pending);
        BOOST_TEST((co_await db->load(home, last_id))->state == core::status::failed);
    });
}

BOOST_AUTO_TEST_CASE(cancel_and_delete_follow_the_state) {
    run([&]() -> asio::awaitable<void> {
        auto pending = co_await submit(*db);
        auto running = co_await submit(*db, true);
        BOOST_TEST((co_await db->remove(home, pending.id)).kind == store::delete_result::active);
        auto c = co_await db->cancel_pending(home, running.id);
        BOOST_TEST(c.kind == store::cancel_result::not_pending);
        BOOST_TEST(c.op.state == core::status::running);
        c = co_await db->cancel_pending(home, pending.id);
        BOOST_TEST(c.kind == store::cancel_result::canceled);
        BOOST_TEST(c.op.state == core::status::canceled);
        c = co_await db->cancel_pending(home, pending.id);
        BOOST_TEST(c.kind == store::cancel_result::not_pending);
        BOOST_TEST((co_await db->cancel_pending(home, core::make_ulid(core::now_ms()))).kind ==
                   store::cancel_result::missing);
        BOOST_TEST((co_await db->remove(home, pending.id)).kind == store::delete_result::deleted);
        BOOST_TEST(!(co_await db->load(home, pending.id)));
        BOOST_TEST((co_await db->remove(home, pending.id)).kind == store::delete_result::missing);
        auto r = co_await db->remove(home, running.id);
        BOOST_TEST(r.kind == store::delete_result::active);
        BOOST_TEST(r.state == core::status::running);
    });
}

BOOST_AUTO_TEST_CASE(event_ids_grow_across_deletes_and_restarts) {
    std::int64_t newest = 0;
    run([&]() -> asio::awaitable<void> {
        auto op = co_await submit(*db);
        co_await db->cancel_pending(home, op.id);
        newest = db->published_seq();
        co_await db->remove(home, op.id);
    });
    reopen();
    run([&]() -> asio::awaitable<void> {
        auto op = co_await submit(*db);
        auto events = co_await db->replay(home, ids_of(op.id), 0, db->published_seq(), 10);
        BOOST_REQUIRE(events.size() == 1u);
        BOOST_TEST(events[0].seq > newest);
    });
}

BOOST_AUTO_TEST_CASE(an_operation_of_another_tenant_is_answered_as_a_missing_one) {
    run([&]() -> asio::awaitable<void> {
        const store::tenant_id acme("acme");
        auto theirs = (co_await submit_for(*db, "acme")).op;
        auto ours = co_await submit(*db);
        BOOST_TEST(theirs.tenant == "acme");
        BOOST_TEST(ours.tenant == "default");

        BOOST_TEST(!(co_await db->load(home, theirs.id)));
        auto loaded = co_await db->load(acme, theirs.id);
        BOOST_REQUIRE(loaded);
        BOOST_TEST(loaded->tenant == "acme");
        BOOST_TEST(!(co_await db->load(acme, ours.id)));
        BOOST_TEST(!(co_await db->load_result(home, theirs.id)));
        BOOST_TEST((co_await db->load_result(acme, theirs.id)).has_value());

        // Neither cancel nor a cancel request reaches it from another tenant.
        auto c = co_await db->cancel_pending(home, theirs.id);
        BOOST_TEST(c.kind == store::cancel_result::missing);
        co_await db->request_cancel(home, theirs.id);
        loaded = co_await db->load(acme, theirs.id);
        BOOST_TEST(loaded->state == core::status::pending);
        BOOST_TEST(!loaded->cancel_requested);

        // Finished, it could be deleted, but not from another tenant.
        c = co_await db->cancel_pending(acme, theirs.id);
        BOOST_TEST(c.kind == store::cancel_result::canceled);
        BOOST_TEST(c.op.tenant == "acme");
        auto r = co_await db->remove(home, theirs.id);
        BOOST_TEST(r.kind == store::delete_result::missing);
        BOOST_TEST((co_await db->load(acme, theirs.id)).has_value());

        // No stream end, and no event, for another tenant's operation.
        auto ends = co_await db->stream_ends(home, ids_of(theirs.id, ours.id));
        BOOST_REQUIRE(ends.size() == 2u);
        BOOST_TEST(!ends[0]);
        BOOST_TEST(ends[1].value() == 0);
        ends = co_await db->stream_ends(acme, ids_of(theirs.id, ours.id));
        BOOST_TEST(ends[0].value() > 0);  // canceled: its terminal event
        BOOST_TEST(!ends[1]);
        const auto upto = db->published_seq();
        BOOST_TEST((co_await db->replay(home, ids_of(theirs.id), 0, upto, 10)).empty());
        auto mixed = co_await db->replay(home, ids_of(theirs.id, ours.id), 0, upto, 10);
        BOOST_REQUIRE(mixed.size() == 1u);
        BOOST_TEST(mixed[0].operation_id == ours.id);
        auto own = co_await db->replay(acme, ids_of(theirs.id, ours.id), 0, upto, 10);
        BOOST_TEST(types_of(own) == (types{"pending", "canceled"}),
                   boost::test_tools::per_element());
        for (const auto& e : own) BOOST_TEST(e.operation_id == theirs.id);
        const auto alone = ids_of(theirs.id);
        own = co_await db->replay(acme, alone, 0, upto, 10);
        BOOST_TEST(types_of(own) == (types{"pending", "canceled"}),
                   boost::test_tools::per_element());

        r = co_await db->remove(acme, theirs.id);
        BOOST_TEST(r.kind == store::delete_result::deleted);
        BOOST_TEST(!(co_await db->load(acme, theirs.id)));
    });
}

BOOST_AUTO_TEST_CASE(lists_show_the_tenants_own_operations_only) {
    run([&]() -> asio::awaitable<void> {
        // Interleaved, so that every filter and page has operations of the other tenant
        // between the ones it shows.
        std::vector<std::string> acme_echo, acme_sleep, home_echo;
        for (int i = 0; i < 3; ++i) {
            acme_echo.push_back((co_await submit_for(*db, "acme", "echo")).op.id);
            home_echo.push_back((co_await submit_for(*db, "default", "echo")).op.id);
            acme_sleep.push_back((co_await submit_for(*db, "acme", "sleep")).op.id);
        }
        const store::tenant_id acme("acme");
        co_await db->cancel_pending(acme, acme_echo[1]);
        co_await db->cancel_pending(home, home_echo[2]);
        auto newest_first = [](std::vector<std::string> ids) {
            std::sort(ids.rbegin(), ids.rend());
            return ids;
        };

        store::list_query all(store::tenant_id("acme"));
        auto rows = co_await db->list(all);
        std::vector<std::string> acme_all = acme_echo;
        acme_all.insert(acme_all.end(), acme_sleep.begin(), acme_sleep.end());
        BOOST_TEST(ids_in(rows) == newest_first(acme_all), boost::test_tools::per_element());
        for (const auto& op : rows) BOOST_TEST(op.tenant == "acme");

        const store::list_query ours(home);
        rows = co_await db->list(ours);
        BOOST_TEST(ids_in(rows) == newest_first(home_echo), boost::test_tools::per_element());

        store::list_query by_kind(store::tenant_id("acme"));
        by_kind.kind = "echo";
        rows = co_await db->list(by_kind);
        BOOST_TEST(ids_in(rows) == newest_first(acme_echo), boost::test_tools::per_element());

        store::list_query pending(store::tenant_id("acme"));
        pending.statuses = {core::status::pending};
        rows = co_await db->list(pending);
        BOOST_TEST(ids_in(rows) == newest_first({acme_echo[0], acme_echo[2], acme_sleep[0],
                                                 acme_sleep[1], acme_sleep[2]}),
                   boost::test_tools::per_element());

        store::list_query canceled(home);
        canceled.statuses = {core::status::canceled, core::status::succeeded};
        rows = co_await db->list(canceled);
        BOOST_TEST(ids_in(rows) == (std::vector<std::string>{home_echo[2]}),
                   boost::test_tools::per_element());

        // A page of two, then the rest before its last id: limit + 1 rows tell that more follow.
        store::list_query page(store::tenant_id("acme"));
        page.kind = "sleep";
        page.limit = 2;
        rows = co_await db->list(page);
        BOOST_TEST(ids_in(rows) == newest_first(acme_sleep), boost::test_tools::per_element());
        page.before = acme_sleep[1];
        rows = co_await db->list(page);
        BOOST_TEST(ids_in(rows) == (std::vector<std::string>{acme_sleep[0]}),
                   boost::test_tools::per_element());

        const store::list_query nobody(store::tenant_id("nobody"));
        rows = co_await db->list(nobody);
        BOOST_TEST(rows.empty());
    });
}

BOOST_AUTO_TEST_CASE(idempotency_keys_are_per_tenant) {
    run([&]() -> asio::awaitable<void> {
        // Named: g++ 12 miscompiles temporaries made inside a co_await expression.
        std::optional<store::idempotency_key> key = store::idempotency_key{"k", R"({"a":1})"};
        auto ours = co_await submit_for(*db, "default", "echo", key);
        auto theirs = co_await submit_for(*db, "acme", "echo", key);
        BOOST_TEST(ours.kind == store::submit_result::accepted);
        BOOST_TEST(theirs.kind == store::submit_result::accepted);
        BOOST_TEST(ours.op.id != theirs.op.id);
        auto again = co_await submit_for(*db, "acme", "echo", key);
        BOOST_TEST(again.kind == store::submit_result::replayed);
        BOOST_TEST(again.operation_id == theirs.op.id);
        again = co_await submit_for(*db, "default", "echo", key);
        BOOST_TEST(again.kind == store::submit_result::replayed);
        BOOST_TEST(again.operation_id == ours.op.id);
        key = store::idempotency_key{"k", R"({"a":2})"};
        again = co_await submit_for(*db, "acme", "echo", key);
        BOOST_TEST(again.kind == store::submit_result::key_reused);
        BOOST_TEST(again.operation_id == theirs.op.id);
    });
}

BOOST_AUTO_TEST_CASE(the_queue_loaded_at_open_knows_each_operations_tenant) {
    run([&]() -> asio::awaitable<void> {
        co_await submit_for(*db, "acme");
        co_await submit_for(*db, "default");
    });
    reopen();
    BOOST_REQUIRE(recovered.pending.size() == 2u);
    BOOST_TEST(recovered.pending[0].tenant == "acme");
    BOOST_TEST(recovered.pending[1].tenant == "default");
}

BOOST_AUTO_TEST_CASE(api_keys_are_found_by_hash_and_id_listed_by_tenant_and_revoked_once) {
    run([&]() -> asio::awaitable<void> {
        auto one = key_of("k1", "acme", core::role::admin);
        one.kinds = std::vector<std::string>{"echo", "sl\"eep"};
        one.expires_at = one.created_at + 60'000;
        auto two = key_of("k2", "acme");
        two.created_at = one.created_at + 1;
        auto three = key_of("k3", "other", core::role::read);
        three.created_at = one.created_at + 2;
        const std::string hash1 = "hash1", hash2 = "hash2", hash3 = "hash3";
        co_await db->create_key(one, hash1);
        co_await db->create_key(two, hash2);
        co_await db->create_key(three, hash3);

        auto found = co_await db->find_key(hash1);
        BOOST_REQUIRE(found);
        BOOST_TEST(found->id == "k1");
        BOOST_TEST(found->tenant == "acme");
        BOOST_TEST((found->role == core::role::admin));
        BOOST_TEST(found->name == "ci");
        BOOST_REQUIRE(found->kinds);
        BOOST_TEST(*found->kinds == *one.kinds, boost::test_tools::per_element());
        BOOST_TEST(found->created_at == one.created_at);
        BOOST_TEST(found->expires_at.value() == *one.expires_at);
        BOOST_TEST(!found->revoked_at);
        const std::string k2 = "k2", k9 = "k9", missing = "nohash";
        found = co_await db->find_key_by_id(k2);
        BOOST_REQUIRE(found);
        BOOST_TEST(!found->kinds);  // every kind
        BOOST_TEST(!found->expires_at);
        BOOST_TEST(!(co_await db->find_key(missing)));
        BOOST_TEST(!(co_await db->find_key_by_id(k9)));

        // Taken ids and hashes are refused.
        // A new id with a taken hash, and a taken id with a new hash.
        std::vector<std::pair<store::api_key_record, std::string>> taken;
        taken.emplace_back(key_of("k4", "acme"), hash1);
        taken.emplace_back(one, "hash-new");
        for (const auto& [record, hash] : taken) {
            bool refused = false;
            try {
                co_await db->create_key(record, hash);
            } catch (const std::exception&) {
                refused = true;
            }
            BOOST_TEST(refused);
        }
        const std::string k4 = "k4";
        BOOST_TEST(!(co_await db->find_key_by_id(k4)));

        auto ids_of_keys = [](const std::vector<store::api_key_record>& keys) {
            std::vector<std::string> out;
            for (const auto& k : keys) out.push_back(k.id);
            return out;
        };
        std::optional<store::tenant_id> acme = store::tenant_id("acme");
        std::optional<store::tenant_id> other = store::tenant_id("other");
        std::optional<store::tenant_id> everyone;
        BOOST_TEST(ids_of_keys(co_await db->list_keys(acme)) == ids_of("k2", "k1"),
                   boost::test_tools::per_element());
        BOOST_TEST(ids_of_keys(co_await db->list_keys(everyone)) == ids_of("k3", "k2", "k1"),
                   boost::test_tools::per_element());

        const auto now = core::now_ms();
        const std::string k1 = "k1", k3 = "k3";
        BOOST_TEST(!(co_await db->revoke_key(other, k1, now)));  // of another tenant
        BOOST_TEST(!(co_await db->revoke_key(acme, k9, now)));   // missing
        BOOST_TEST((co_await db->revoke_key(acme, k1, now)));
        BOOST_TEST(!(co_await db->revoke_key(acme, k1, now)));      // already
        BOOST_TEST(!(co_await db->revoke_key(everyone, k1, now)));  // already
        BOOST_TEST((co_await db->revoke_key(everyone, k3, now)));   // the operator's

        // Revoked keys are still found (the caller refuses them), and listed no more.
        found = co_await db->find_key(hash1);
        BOOST_REQUIRE(found);
        BOOST_TEST(found->revoked_at.value() == now);
        BOOST_TEST(ids_of_keys(co_await db->list_keys(acme)) == ids_of("k2"),
                   boost::test_tools::per_element());
        BOOST_TEST((co_await db->list_keys(other)).empty());
    });
}

BOOST_AUTO_TEST_CASE(key_changes_show_revocations_of_every_process_on_the_database) {
    auto other = beside();
    run([&]() -> asio::awaitable<void> {
        const auto start = co_await db->key_changes_since(0);
        BOOST_TEST(start.version == 0);
        BOOST_TEST(start.revoked.empty());
        for (int i = 1; i <= 3; ++i) {
            const auto key = key_of("k" + std::to_string(i), "acme");
            const auto hash = "hash" + std::to_string(i);
            co_await db->create_key(key, hash);
        }
        const auto made = co_await db->key_changes_since(start.version);
        BOOST_TEST(made.version == 3);  // each creation is a change
        BOOST_TEST(made.revoked.empty());

        std::optional<store::tenant_id> any;
        const std::string k2 = "k2", k3 = "k3", hash4 = "hash4";
        BOOST_TEST((co_await db->revoke_key(any, k2, core::now_ms())));
        auto changes = co_await db->key_changes_since(made.version);
        BOOST_TEST(changes.version > made.version);
        BOOST_TEST(changes.revoked == ids_of("k2"), boost::test_tools::per_element());

        // Another process revokes one, and makes one: the readers here see both.
        BOOST_TEST((co_await other->revoke_key(any, k3, core::now_ms())));
        const auto four = key_of("k4", "acme");
        co_await other->create_key(four, hash4);
        auto later = co_await db->key_changes_since(changes.version);
        BOOST_TEST(later.version > changes.version + 1);
        BOOST_TEST(later.revoked == ids_of("k3"), boost::test_tools::per_element());
        BOOST_TEST((co_await db->find_key(hash4)).has_value());
        auto all = co_await db->key_changes_since(0);
        BOOST_TEST(all.version == later.version);
        BOOST_TEST(all.revoked == ids_of("k2", "k3"), boost::test_tools::per_element());
        BOOST_TEST((co_await db->key_changes_since(later.version)).revoked.empty());
        // And it sees what was done here.
        BOOST_TEST((co_await other->key_changes_since(0)).version == later.version);
    });
    other->close();
}

BOOST_AUTO_TEST_CASE(a_shared_secret_is_the_first_candidate_for_every_store_on_the_file) {
    auto first = db->shared_secret("session", "candidate-1");
    BOOST_TEST(first == "candidate-1");
    // Secrets are bytes, not text: every byte value comes back as it went in.
    std::string bytes;
    for (int b = 0; b < 256; ++b) bytes += static_cast<char>(b);
    BOOST_TEST(db->shared_secret("binary", bytes) == bytes);
    BOOST_TEST(db->shared_secret("session", "candidate-2") == "candidate-1");
    BOOST_TEST(db->shared_secret("other", "candidate-3") == "candidate-3");
    auto other = beside();
    BOOST_TEST(other->shared_secret("session", "candidate-4") == "candidate-1");
    other->close();
    reopen();
    BOOST_TEST(db->shared_secret("session", "candidate-5") == "candidate-1");
}

BOOST_AUTO_TEST_CASE(attaching_beside_a_running_server_leaves_its_operations_alone) {
    std::string running_id;
    run([&]() -> asio::awaitable<void> { running_id = (co_await submit(*db, true)).id; });
    auto other = beside();
    run([&]() -> asio::awaitable<void> {
        auto seen = co_await other->load(home, running_id);
        BOOST_REQUIRE(seen);
        BOOST_TEST(seen->state == core::status::running);  // not abandoned
        BOOST_TEST(seen->attempt == 1);
    });
    other->close();
    run([&]() -> asio::awaitable<void> {
        BOOST_TEST((co_await db->load(home, running_id))->state == core::status::running);
    });
}

BOOST_AUTO_TEST_SUITE_END()
