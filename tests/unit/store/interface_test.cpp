// The store's interface, exercised through store::store alone: the cases every backend must
// pass. The fixture opens the SQLite backend on a temporary database.
#include <boost/asio/awaitable.hpp>
#include <boost/test/unit_test.hpp>
#include <mutex>
#include <ostream>

#include "core/lifecycle.hpp"
#include "core/ulid.hpp"
#include "runtime/embedded.hpp"
#include "store/store.hpp"
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

    backend() { reopen(); }
    ~backend() {
        if (db) db->close();
    }

    void reopen() {
        if (db) db->close();
        store::settings s;
        s.path = (dir / "i.db").string();
        for (const auto& f : embedded::migrations()) s.migrations.push_back({f.name, f.content});
        db = store::make_sqlite_store(std::move(s));
        db->on_commit = [this](std::vector<core::event> events) {
            std::lock_guard lock(m);
            for (auto& e : events) published.push_back(std::move(e));
        };
        recovered = db->open(core::now_ms());
    }

    template <class F>
    auto run(F f) {
        return test::run_coroutine(std::move(f));
    }
};

core::operation new_op(std::string kind = "echo") {
    core::operation op;
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
    store::list_query q;
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
        auto loaded = co_await db->load(op.id);
        BOOST_REQUIRE(loaded);
        BOOST_TEST(loaded->state == core::status::running);
        BOOST_TEST(loaded->attempt == 1);
        auto events = co_await db->replay(ids_of(op.id), 0, db->published_seq(), 10);
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
        BOOST_TEST(!(co_await db->load(other_id)));  // nothing stored
    });
}

BOOST_AUTO_TEST_CASE(a_claim_starts_only_what_is_still_pending) {
    run([&]() -> asio::awaitable<void> {
        auto a = co_await submit(*db);
        auto b = co_await submit(*db);
        co_await db->cancel_pending(b.id);
        std::vector<store::claim> claims{{a.id, a.row}, {b.id, b.row}, {"x", 999}};
        auto started = co_await db->start_attempts(std::move(claims), core::now_ms());
        BOOST_REQUIRE(started.size() == 3u);
        BOOST_REQUIRE(started[0].op);
        BOOST_TEST(started[0].op->state == core::status::running);
        BOOST_TEST(started[0].op->attempt == 1);
        BOOST_TEST(!started[1].op);  // canceled meanwhile
        BOOST_TEST(!started[1].error);
        BOOST_TEST(!started[2].op);  // no such operation
        auto events = co_await db->replay(ids_of(a.id), 0, db->published_seq(), 10);
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
        auto stored = co_await db->load_result(op.id);
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
        BOOST_TEST((co_await db->load(op.id))->state == core::status::succeeded);
        auto events = co_await db->replay(ids_of(op.id), 0, db->published_seq(), 10);
        BOOST_TEST(types_of(events) == (types{"pending", "running", "completed"}),
                   boost::test_tools::per_element());
        auto ends = co_await db->stream_ends(ids_of(op.id, core::make_ulid(core::now_ms())));
        BOOST_TEST(ends[0].value() == events.back().seq);
        BOOST_TEST(!ends[1]);
    });
}

// The job's copy of a running operation predates a cancel request: writing its progress or
// handing it back at shutdown must not take the request back.
BOOST_AUTO_TEST_CASE(a_requested_cancel_survives_later_writes_of_the_job_and_a_restart) {
    run([&]() -> asio::awaitable<void> {
        auto op = co_await submit(*db, true);
        co_await db->request_cancel(op.id);
        BOOST_TEST((co_await db->load(op.id))->cancel_requested);
        auto report = lc::apply(op, lc::progressed{40, "on"});
        std::vector<store::change> one{{report.op, report.events}};
        BOOST_TEST((co_await db->record(one))[0].written);
        auto back = lc::apply(report.op, lc::handed_back{});
        std::vector<store::change> two{{back.op, back.events}};
        BOOST_TEST((co_await db->record(two))[0].written);
        auto loaded = co_await db->load(op.id);
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
        auto r = co_await db->load(running_id);
        BOOST_TEST(r->state == core::status::pending);
        BOOST_TEST(r->error.value().find("/problems/abandoned") != std::string::npos);
        BOOST_TEST((co_await db->load(pending_id))->state == core::status::pending);
        BOOST_TEST((co_await db->load(last_id))->state == core::status::failed);
    });
}

BOOST_AUTO_TEST_CASE(cancel_and_delete_follow_the_state) {
    run([&]() -> asio::awaitable<void> {
        auto pending = co_await submit(*db);
        auto running = co_await submit(*db, true);
        BOOST_TEST((co_await db->remove(pending.id)).kind == store::delete_result::active);
        auto c = co_await db->cancel_pending(running.id);
        BOOST_TEST(c.kind == store::cancel_result::not_pending);
        BOOST_TEST(c.op.state == core::status::running);
        c = co_await db->cancel_pending(pending.id);
        BOOST_TEST(c.kind == store::cancel_result::canceled);
        BOOST_TEST(c.op.state == core::status::canceled);
        c = co_await db->cancel_pending(pending.id);
        BOOST_TEST(c.kind == store::cancel_result::not_pending);
        BOOST_TEST((co_await db->cancel_pending(core::make_ulid(core::now_ms()))).kind ==
                   store::cancel_result::missing);
        BOOST_TEST((co_await db->remove(pending.id)).kind == store::delete_result::deleted);
        BOOST_TEST(!(co_await db->load(pending.id)));
        BOOST_TEST((co_await db->remove(pending.id)).kind == store::delete_result::missing);
        auto r = co_await db->remove(running.id);
        BOOST_TEST(r.kind == store::delete_result::active);
        BOOST_TEST(r.state == core::status::running);
    });
}

BOOST_AUTO_TEST_CASE(event_ids_grow_across_deletes_and_restarts) {
    std::int64_t newest = 0;
    run([&]() -> asio::awaitable<void> {
        auto op = co_await submit(*db);
        co_await db->cancel_pending(op.id);
        newest = db->published_seq();
        co_await db->remove(op.id);
    });
    reopen();
    run([&]() -> asio::awaitable<void> {
        auto op = co_await submit(*db);
        auto events = co_await db->replay(ids_of(op.id), 0, db->published_seq(), 10);
        BOOST_REQUIRE(events.size() == 1u);
        BOOST_TEST(events[0].seq > newest);
    });
}

BOOST_AUTO_TEST_SUITE_END()
