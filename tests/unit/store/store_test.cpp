#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/test/unit_test.hpp>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include "core/ulid.hpp"
#include "runtime/embedded.hpp"
#include "store/sqlite/executor.hpp"
#include "store/sqlite/queries.hpp"
#include "support/process.hpp"
#include "support/run_coroutine.hpp"
#include "support/wait.hpp"

using namespace buzzer;
namespace asio = boost::asio;
namespace sql = buzzer::store::sqlite;

namespace {

// The tenant of operations made here (make_op leaves it at the default).
const store::tenant_id tenant(core::default_tenant);

// Executor settings with the embedded schema.
sql::executor::settings schema(std::string path, bool synchronous_full, unsigned readers,
                               std::size_t max_batch, int checkpoint_frames = 1000,
                               int restart_frames = 16000) {
    sql::executor::settings s;
    s.path = std::move(path);
    s.synchronous_full = synchronous_full;
    s.readers = readers;
    s.max_batch = max_batch;
    s.checkpoint_frames = checkpoint_frames;
    s.restart_frames = restart_frames;
    for (const auto& m : embedded::migrations()) s.migrations.push_back({m.name, m.content});
    return s;
}

core::operation make_op(const std::string& id) {
    core::operation op;
    op.id = id;
    op.kind = "echo";
    op.input = "null";
    op.max_attempts = 3;
    op.created_at = core::now_ms();
    return op;
}

// Stores operation `id` with an input of ~3 KB (a page of the WAL of its own) and its event.
asio::awaitable<void> write_large(sql::executor& db, std::string id) {
    auto op = make_op(id);
    op.input = std::string(3000, 'x');
    co_await db.write([&](sql::write_context& w) {
        sql::insert_operation(w.db, op);
        w.add_event(op.id, "pending", "{}");
    });
}

std::string id_of(int i) {
    auto s = std::to_string(i);
    return "01JDB6Q6X8Z3M9J1V7Q" + std::string(7 - s.size(), '0') + s;
}

// Runs `body(i)` for every i in [first, last] at once, each coroutine on a strand of its own,
// over two threads; returns when all have ended.
template <class Body>
void run_concurrently(int first, int last, Body body) {
    test::run_coroutine(
        [&]() -> asio::awaitable<void> {
            auto ex = co_await asio::this_coro::executor;
            for (int i = first; i <= last; ++i)
                asio::co_spawn(asio::make_strand(ex), body(i), asio::detached);
            co_return;
        },
        2);
}

// A store on a temporary database (two readers) that keeps every event it publishes.
struct recording_store {
    test::temp_dir dir;
    std::vector<core::event> published;
    std::mutex m;
    sql::executor db{schema((dir / "s.db").string(), true, 2, 4096)};  // closed before the above go

    recording_store() {
        db.open();
        db.on_commit = [this](std::vector<core::event> events) {
            std::lock_guard lock(m);
            for (auto& e : events) published.push_back(std::move(e));
        };
    }
};

}  // namespace

BOOST_AUTO_TEST_SUITE(store_executor)

BOOST_FIXTURE_TEST_CASE(concurrent_writes_share_commits, recording_store) {
    constexpr int n = 400;
    std::atomic<int> done{0};
    run_concurrently(0, n - 1, [&](int i) -> asio::awaitable<void> {
        auto op = make_op(id_of(i));
        co_await db.write([&](sql::write_context& w) {
            sql::insert_operation(w.db, op);
            w.add_event(op.id, "pending", "{}");
        });
        ++done;
    });
    BOOST_TEST(done.load() == n);
    // Every write was durable before it resumed, and most rode a shared commit.
    BOOST_TEST(db.stats().writes.load() == static_cast<std::uint64_t>(n));
    BOOST_TEST(db.stats().batches.load() < static_cast<std::uint64_t>(n));
    BOOST_TEST(published.size() == static_cast<std::size_t>(n));
    for (std::size_t i = 1; i < published.size(); ++i)
        BOOST_TEST_REQUIRE(published[i].seq > published[i - 1].seq);
}

BOOST_AUTO_TEST_CASE(a_failing_write_rolls_back_only_itself) {
    test::temp_dir dir;
    sql::executor db{schema((dir / "s.db").string(), true, 1, 4096)};
    db.open();
    bool second_failed = false;
    test::run_coroutine([&]() -> asio::awaitable<void> {
        co_await db.write(
            [&](sql::write_context& w) { sql::insert_operation(w.db, make_op(id_of(1))); });
        try {
            co_await db.write([&](sql::write_context& w) {
                sql::insert_operation(w.db, make_op(id_of(2)));
                w.add_event(id_of(2), "pending", "{}");
                sql::insert_operation(w.db, make_op(id_of(1)));  // duplicate id: fails
            });
        } catch (const sql::sqlite_error&) {
            second_failed = true;
        }
        std::optional<core::operation> one, two;
        co_await db.read([&](sql::connection& c) {
            one = sql::load_operation(c, tenant, id_of(1));
            two = sql::load_operation(c, tenant, id_of(2));
        });
        BOOST_TEST(one.has_value());
        BOOST_TEST(!two.has_value());
        std::vector<core::event> events;
        co_await db.read([&](sql::connection& c) {
            events = sql::read_events(c, tenant, {id_of(2)}, 0, INT64_MAX, 10);
        });
        BOOST_TEST(events.empty());
    });
    BOOST_TEST(second_failed);
}

BOOST_FIXTURE_TEST_CASE(failing_requests_in_a_shared_batch_undo_only_themselves, recording_store) {
    test::run_coroutine([&]() -> asio::awaitable<void> {
        co_await db.write(
            [&](sql::write_context& w) { sql::insert_operation(w.db, make_op(id_of(0))); });
    });
    // Every third request inserts an id that exists, after an event and an insert of its own.
    constexpr int n = 300;
    std::atomic<int> ok{0}, failed{0};
    run_concurrently(1, n, [&](int i) -> asio::awaitable<void> {
        try {
            co_await db.write([&](sql::write_context& w) {
                sql::insert_operation(w.db, make_op(id_of(i)));
                w.add_event(id_of(i), "pending", "{}");
                if (i % 3 == 0) sql::insert_operation(w.db, make_op(id_of(0)));
            });
            ++ok;
        } catch (const sql::sqlite_error&) {
            ++failed;
        }
    });
    BOOST_TEST(ok.load() == n - n / 3);
    BOOST_TEST(failed.load() == n / 3);
    // Batches were shared, so some ran again request by request.
    BOOST_TEST(db.stats().batches.load() < static_cast<std::uint64_t>(n));
    std::vector<std::string> kept, events_of_failed;
    test::run_coroutine([&]() -> asio::awaitable<void> {
        co_await db.read([&](sql::connection& c) {
            for (int i = 1; i <= n; ++i)
                if (sql::load_operation(c, tenant, id_of(i))) kept.push_back(id_of(i));
            for (int i = 3; i <= n; i += 3)
                for (auto& e : sql::read_events(c, tenant, {id_of(i)}, 0, INT64_MAX, 10))
                    events_of_failed.push_back(e.operation_id);
        });
    });
    BOOST_TEST(kept.size() == static_cast<std::size_t>(n - n / 3));
    BOOST_TEST(events_of_failed.empty());
    std::lock_guard lock(m);
    BOOST_TEST(published.size() == static_cast<std::size_t>(n - n / 3));
    for (std::size_t i = 1; i < published.size(); ++i)
        BOOST_TEST_REQUIRE(published[i].seq > published[i - 1].seq);
}

BOOST_FIXTURE_TEST_CASE(write_each_reports_each_error_and_keeps_the_others, recording_store) {
    std::vector<std::exception_ptr> errors;
    test::run_coroutine([&]() -> asio::awaitable<void> {
        std::vector<sql::executor::write_fn> fns;
        for (int i = 1; i <= 3; ++i) {
            fns.push_back([i](sql::write_context& w) {
                sql::insert_operation(w.db, make_op(id_of(i)));
                w.add_event(id_of(i), "pending", "{}");
                if (i == 2) throw std::runtime_error("second");
            });
        }
        errors = co_await db.write_each(std::move(fns));
        std::optional<core::operation> one, two, three;
        co_await db.read([&](sql::connection& c) {
            one = sql::load_operation(c, tenant, id_of(1));
            two = sql::load_operation(c, tenant, id_of(2));
            three = sql::load_operation(c, tenant, id_of(3));
        });
        BOOST_TEST(one.has_value());
        BOOST_TEST(!two.has_value());
        BOOST_TEST(three.has_value());
        // Nothing given: nothing written, and the caller still resumes.
        auto none = co_await db.write_each({});
        BOOST_TEST(none.empty());
    });
    BOOST_REQUIRE_EQUAL(errors.size(), 3u);
    BOOST_TEST(!errors[0]);
    BOOST_TEST(!!errors[1]);
    BOOST_TEST(!errors[2]);
    std::lock_guard lock(m);
    BOOST_REQUIRE_EQUAL(published.size(), 2u);
    BOOST_TEST(published[0].operation_id == id_of(1));
    BOOST_TEST(published[1].operation_id == id_of(3));
}

BOOST_AUTO_TEST_CASE(data_survives_reopening) {
    test::temp_dir dir;
    auto path = (dir / "s.db").string();
    {
        sql::executor db{schema(path, true, 1, 4096)};
        db.open();
        test::run_coroutine([&]() -> asio::awaitable<void> {
            co_await db.write([&](sql::write_context& w) {
                sql::insert_operation(w.db, make_op(id_of(7)));
                w.add_event(id_of(7), "pending", "{}");
            });
        });
    }
    sql::executor db{schema(path, true, 1, 4096)};
    std::vector<core::queued> pending;
    db.open([&](sql::write_context& w) { pending = sql::pending_operations(w.db); });
    BOOST_TEST(pending.size() == 1u);
    BOOST_TEST(pending[0].id == id_of(7));
}

BOOST_AUTO_TEST_CASE(event_ids_are_not_reused_after_the_newest_events_are_deleted) {
    test::temp_dir dir;
    auto path = (dir / "s.db").string();
    std::int64_t newest = 0;
    {
        sql::executor db{schema(path, true, 1, 4096)};
        db.open();
        test::run_coroutine([&]() -> asio::awaitable<void> {
            co_await db.write([&](sql::write_context& w) {
                sql::insert_operation(w.db, make_op(id_of(1)));
                w.add_event(id_of(1), "pending", "{}");
                auto done = make_op(id_of(2));
                done.state = core::status::succeeded;
                sql::insert_operation(w.db, done);
                w.add_event(id_of(2), "pending", "{}");
                newest = w.add_event(id_of(2), "completed", "{}");
            });
            // The newest events go with their operation.
            co_await db.write([&](sql::write_context& w) {
                BOOST_TEST(sql::delete_operation(w.db, tenant, id_of(2)));
            });
        });
    }
    sql::executor db{schema(path, true, 1, 4096)};
    db.open();
    std::int64_t next = 0;
    test::run_coroutine([&]() -> asio::awaitable<void> {
        co_await db.write(
            [&](sql::write_context& w) { next = w.add_event(id_of(1), "running", "{}"); });
    });
    BOOST_TEST(newest >= 3);
    BOOST_TEST(next > newest);
}

BOOST_AUTO_TEST_CASE(every_commit_is_synced_and_the_wal_is_checkpointed_and_restarted) {
    test::temp_dir dir;
    auto path = (dir / "s.db").string();
    sql::executor db{schema(path, true, 1, 4096, 50, 200)};
    db.open();
    test::run_coroutine([&]() -> asio::awaitable<void> {
        for (int i = 0; i < 600; ++i) {
            co_await write_large(db, id_of(i));
            // A write resumes only after an fsync that covers it.
            BOOST_TEST_REQUIRE(db.stats().syncs.load() >= db.stats().batches.load());
        }
    });
    BOOST_TEST(db.stats().checkpoints.load() > 0u);
    // Checkpoints that wait for the writer let the WAL start over: it stays near the bound
    // instead of holding all 600 writes (over 3,000 frames).
    auto wal = std::filesystem::file_size(path + "-wal");
    BOOST_TEST(wal < 1000u * 4120u);
}

BOOST_AUTO_TEST_CASE(checkpoints_restart_the_wal_while_writers_never_pause) {
    // 32 writers in closed loops keep a transaction open nearly all the time; a checkpoint that
    // needs the writer lock must still get it, and no writer may wait for ever.
    test::temp_dir dir;
    auto path = (dir / "s.db").string();
    sql::executor db{schema(path, true, 1, 4096, 50, 200)};
    db.open();
    constexpr int writers = 32, each = 40;
    std::atomic<int> done{0};
    std::atomic<std::uint64_t> max_wal{0};
    run_concurrently(0, writers - 1, [&](int w) -> asio::awaitable<void> {
        for (int i = 0; i < each; ++i) {
            co_await write_large(db, id_of(w * each + i));
            std::error_code ec;
            auto size = std::filesystem::file_size(path + "-wal", ec);
            if (!ec && size > max_wal) max_wal = size;
            ++done;
        }
    });
    BOOST_TEST(done.load() == writers * each);
    BOOST_TEST(db.stats().checkpoints.load() > 0u);
    // 1,280 writes of ~3 KB are over 1,000 frames: the WAL started over at least once.
    BOOST_TEST(max_wal.load() < 1000u * 4120u);
    std::int64_t stored = 0;
    test::run_coroutine([&]() -> asio::awaitable<void> {
        co_await db.read([&](sql::connection& c) {
            auto s = c.cached("SELECT count(*) FROM operations");
            s->step();
            stored = s->get_int(0);
        });
    });
    BOOST_TEST(stored == writers * each);
}

BOOST_AUTO_TEST_CASE(events_are_published_in_order_and_counted_before_the_writer_resumes) {
    test::temp_dir dir;
    sql::executor db{schema((dir / "s.db").string(), true, 1, 4096)};
    std::vector<std::int64_t> published;
    std::mutex m;
    db.on_commit = [&](std::vector<core::event> events) {
        std::lock_guard lock(m);
        for (const auto& e : events) {
            // The counter already covers what on_commit is handed.
            BOOST_TEST(db.published_seq() >= e.seq);
            published.push_back(e.seq);
        }
    };
    db.open();
    BOOST_TEST(db.published_seq() == 0);
    test::run_coroutine([&]() -> asio::awaitable<void> {
        for (int i = 0; i < 50; ++i) {
            std::int64_t seq = 0;
            co_await db.write([&](sql::write_context& w) {
                sql::insert_operation(w.db, make_op(id_of(i)));
                seq = w.add_event(id_of(i), "pending", "{}");
            });
            BOOST_TEST_REQUIRE(db.published_seq() >= seq);
        }
    });
    std::lock_guard lock(m);
    BOOST_TEST(published.size() == 50u);
    BOOST_TEST(std::is_sorted(published.begin(), published.end()));
}

BOOST_AUTO_TEST_CASE(without_synchronous_full_nothing_is_synced) {
    test::temp_dir dir;
    sql::executor db{schema((dir / "s.db").string(), false, 1, 4096)};
    db.open();
    test::run_coroutine([&]() -> asio::awaitable<void> {
        for (int i = 0; i < 20; ++i)
            co_await db.write(
                [&](sql::write_context& w) { sql::insert_operation(w.db, make_op(id_of(i))); });
    });
    BOOST_TEST(db.stats().batches.load() == 20u);
    BOOST_TEST(db.stats().syncs.load() == 0u);
}

BOOST_AUTO_TEST_CASE(writes_after_close_fail_cleanly) {
    test::temp_dir dir;
    sql::executor db{schema((dir / "s.db").string(), true, 1, 4096)};
    db.open();
    db.close();
    bool failed = false;
    test::run_coroutine([&]() -> asio::awaitable<void> {
        try {
            co_await db.write([](sql::write_context&) {});
        } catch (const std::runtime_error&) {
            failed = true;
        }
    });
    BOOST_TEST(failed);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_CASE(the_store_threads_are_named_and_checkpoints_run_at_a_lower_priority) {
    test::temp_dir dir;
    sql::executor db{schema((dir / "s.db").string(), true, 1, 4096)};
    db.open();
    // The nice value (the 19th field of stat, after the parenthesised name) of each thread, by
    // name; the stores of other tests may still be running theirs.
    std::map<std::string, std::vector<long>> nice_of;
    auto look = [&] {
        nice_of.clear();
        for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
            std::ifstream comm(task.path() / "comm");
            std::string name;
            std::getline(comm, name);
            std::ifstream stat(task.path() / "stat");
            std::string line;
            std::getline(stat, line);
            std::istringstream rest(line.substr(line.rfind(')') + 2));
            std::string field;
            for (int i = 3; i < 19; ++i) rest >> field;
            long nice = 0;
            rest >> nice;
            nice_of[name].push_back(nice);
        }
        return nice_of.count("buzzer-writer") && nice_of.count("buzzer-syncer") &&
               nice_of.count("buzzer-reader") && nice_of.count("buzzer-ckpt");
    };
    // Each thread names itself once it runs.
    BOOST_TEST_REQUIRE(test::wait_until(look, std::chrono::seconds(5)));
    const long base = ::getpriority(PRIO_PROCESS, 0);
    for (const char* name : {"buzzer-writer", "buzzer-syncer", "buzzer-reader"})
        for (long n : nice_of[name]) BOOST_TEST(n == base, name);
    for (long n : nice_of["buzzer-ckpt"]) BOOST_TEST(n >= base + 10);
}

BOOST_AUTO_TEST_CASE(the_purge_takes_operations_finished_before_the_cutoff_and_nothing_else) {
    test::temp_dir dir;
    sql::executor db{schema((dir / "s.db").string(), true, 1, 4096)};
    db.open();
    const core::millis now = core::now_ms();
    const core::millis cutoff = now - 5'000;
    auto op_at = [](core::millis created, core::status state, std::optional<core::millis> done) {
        auto op = make_op(core::make_ulid(created));
        op.created_at = created;
        op.state = state;
        op.finished_at = done;
        return op;
    };
    const auto old_done = op_at(now - 10'000, core::status::succeeded, now - 9'000);
    const auto old_failed = op_at(now - 10'000, core::status::failed, now - 6'000);
    const auto old_but_done_since = op_at(now - 10'000, core::status::succeeded, now - 1'000);
    const auto old_still_running = op_at(now - 10'000, core::status::running, std::nullopt);
    const auto new_done = op_at(now - 2'000, core::status::canceled, now - 1'000);
    int purged = -1;
    test::run_coroutine([&]() -> asio::awaitable<void> {
        co_await db.write([&](sql::write_context& w) {
            for (const auto* op :
                 {&old_done, &old_failed, &old_but_done_since, &old_still_running, &new_done}) {
                auto saved = *op;
                saved.row = sql::insert_operation(w.db, saved);
                sql::save_operation(w.db, saved);  // its state and finish time
                w.add_event(op->id, "pending", "{}");
            }
        });
        co_await db.write(
            [&](sql::write_context& w) { purged = sql::purge_finished(w.db, cutoff, 1000); });
    });
    BOOST_TEST(purged == 2);
    std::map<std::string, bool> present;
    test::run_coroutine([&]() -> asio::awaitable<void> {
        co_await db.read([&](sql::connection& c) {
            for (const auto* op :
                 {&old_done, &old_failed, &old_but_done_since, &old_still_running, &new_done})
                present[op->id] = sql::load_operation(c, tenant, op->id).has_value() &&
                                  !sql::read_events(c, tenant, {op->id}, 0, 1LL << 62, 10).empty();
        });
    });
    BOOST_TEST(!present[old_done.id]);
    BOOST_TEST(!present[old_failed.id]);
    BOOST_TEST(present[old_but_done_since.id]);
    BOOST_TEST(present[old_still_running.id]);
    BOOST_TEST(present[new_done.id]);
}
