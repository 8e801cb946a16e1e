#include "store/postgres/executor.hpp"

#include <fcntl.h>
#include <libpq-fe.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/async_result.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cerrno>
#include <charconv>
#include <cstring>

#include "core/log.hpp"
#include "core/thread.hpp"
#include "store/postgres/migrate.hpp"

namespace buzzer::store::postgres {
namespace asio = boost::asio;

namespace {

// The channel on which every commit with events announces its newest id.
constexpr const char* events_channel = "buzzer_events";

// Counts a connection as busy while a request runs on it.
struct busy_guard {
    std::atomic<std::int64_t>& n;
    explicit busy_guard(std::atomic<std::int64_t>& n) : n(n) { ++n; }
    ~busy_guard() { --n; }
};

// Whether an error means that the connection is gone (and must be made again).
bool broken(const connection* db) { return !db || !db->ok(); }

// The events with `after < seq <= upto`, oldest first, at most `limit`.
std::vector<core::event> events_between(connection& db, std::int64_t after, std::int64_t upto,
                                        int limit) {
    const param params[] = {int_param(after), int_param(upto), int_param(limit)};
    auto r = db.query(
        "SELECT seq, operation_id, type, data FROM events WHERE seq > $1 AND seq <= $2 "
        "ORDER BY seq LIMIT $3",
        params);
    std::vector<core::event> out;
    out.reserve(r.rows());
    for (int i = 0; i < r.rows(); ++i)
        out.push_back(core::event{r.int64(i, 0), r.text(i, 1), r.text(i, 2), r.text(i, 3)});
    return out;
}

// The newest event id committed (taken ids are committed with their events).
std::int64_t newest_event(connection& db) {
    return db.query("SELECT value FROM counters WHERE name = 'event_seq'").int64(0, 0);
}

void send_signals(connection& db, std::vector<std::string>& signals) {
    if (signals.empty()) return;
    std::vector<std::string_view> payloads(signals.begin(), signals.end());
    const param params[] = {text_array_param(payloads)};
    db.query("SELECT pg_notify('buzzer_events', s) FROM unnest($1::text[]) AS s", params);
}

// Sends the signals, takes the events' ids and commits. The ids are taken last, in one
// statement that also inserts the events and announces the newest id, sent with the COMMIT in
// one round trip: the counter's row stays locked until this transaction's commit is visible,
// so that ids are taken in commit order (see migration 0001), and for no longer.
void finish_transaction(transaction& tx, connection& db, std::vector<core::event>& events,
                        std::vector<std::string>& signals) {
    send_signals(db, signals);
    if (events.empty()) {
        tx.commit();
        return;
    }
    std::vector<std::string_view> ops, types, data;
    ops.reserve(events.size());
    types.reserve(events.size());
    data.reserve(events.size());
    for (const auto& e : events) {
        ops.push_back(e.operation_id);
        types.push_back(e.type);
        data.push_back(e.data);
    }
    const param params[] = {int_param(static_cast<std::int64_t>(events.size())),
                            text_array_param(ops), text_array_param(types), text_array_param(data)};
    auto r = tx.commit_with(
        "WITH c AS (UPDATE counters SET value = value + $1::bigint WHERE name = 'event_seq' "
        "RETURNING value - $1::bigint AS base), "
        "i AS (INSERT INTO events (seq, operation_id, type, data) "
        "SELECT c.base + e.n, e.op, e.type, e.data "
        "FROM unnest($2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS e(op, type, data, n) "
        "LEFT JOIN c ON true) "
        "SELECT base, pg_notify('buzzer_events', (base + $1::bigint)::text) FROM c",
        params);
    // Without the counter's row the ids would be null, which the insert refuses (before the
    // commit): this cannot be met after it.
    if (r.rows() != 1) throw std::runtime_error("the event_seq counter is missing");
    const auto base = r.int64(0, 0);
    for (std::size_t i = 0; i < events.size(); ++i)
        events[i].seq = base + static_cast<std::int64_t>(i) + 1;
}

}  // namespace

void write_context::add_event(std::string_view operation_id, std::string_view type,
                              std::string data) {
    events_.push_back(
        core::event{0, std::string(operation_id), std::string(type), std::move(data)});
}

void write_context::signal(std::string payload) {
    if (std::find(signals_.begin(), signals_.end(), payload) == signals_.end())
        signals_.push_back(std::move(payload));
}

void write_context::insert_operation(const core::operation& op, std::string_view node,
                                     std::int64_t& row) {
    inserts_.push_back(new_operation{&op, node, &row});
}

void write_context::flush() {
    insert_operations(db, inserts_);
    inserts_.clear();
}

executor::executor(settings s) : settings_(std::move(s)) {}

executor::~executor() { close(); }

std::unique_ptr<connection> executor::connect() {
    try {
        auto db = std::make_unique<connection>(settings_.uri);
        pool_.connects.fetch_add(1, std::memory_order_relaxed);
        reachable_.store(true, std::memory_order_release);
        return db;
    } catch (const pg_error&) {
        pool_.connect_errors.fetch_add(1, std::memory_order_relaxed);
        reachable_.store(false, std::memory_order_release);
        throw;
    }
}

void executor::open(const write_fn& startup) {
    auto db = connect();
    migrate(*db, settings_.migrations);
    if (startup) {
        std::vector<core::event> events;
        std::vector<std::string> signals;
        write_context ctx(*db, events, signals);
        transaction tx(*db);
        startup(ctx);
        ctx.flush();
        finish_transaction(tx, *db, events, signals);
    }
    published_seq_.store(newest_event(*db));
    if (::pipe2(wake_pipe_, O_CLOEXEC) != 0)
        throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
    open_ = true;
    const unsigned writers = std::max(1u, settings_.writers);
    pool_.open.store(writers + std::max(1u, settings_.readers) + 1);
    // The other writers connect when their first batch comes.
    writer_dbs_.resize(writers);
    writer_dbs_[0] = std::move(db);
    for (auto& writer_db : writer_dbs_)
        writers_.emplace_back([this, &writer_db] {
            core::name_this_thread("buzzer-pg-writer");
            run_writer(writer_db);
        });
    for (unsigned i = 0; i < std::max(1u, settings_.readers); ++i)
        readers_.emplace_back([this] {
            core::name_this_thread("buzzer-pg-reader");
            run_reader();
        });
    listener_ = std::thread([this] {
        core::name_this_thread("buzzer-pg-listen");
        run_listener();
    });
}

void executor::close() {
    {
        std::lock_guard lock(write_mutex_);
        write_stopping_ = true;
    }
    write_cv_.notify_all();
    for (auto& t : writers_)
        if (t.joinable()) t.join();
    writers_.clear();
    {
        std::lock_guard lock(read_mutex_);
        read_stopping_ = true;
    }
    read_cv_.notify_all();
    for (auto& t : readers_)
        if (t.joinable()) t.join();
    readers_.clear();
    listen_stopping_ = true;
    if (wake_pipe_[1] >= 0) {
        char c = 0;
        [[maybe_unused]] auto n = ::write(wake_pipe_[1], &c, 1);
    }
    if (listener_.joinable()) listener_.join();
    for (int& fd : wake_pipe_) {
        if (fd >= 0) ::close(fd);
        fd = -1;
    }
    writer_dbs_.clear();
    pool_.open.store(0);
    open_ = false;
}

void executor::push_writes(std::vector<write_request> rs) {
    {
        std::lock_guard lock(write_mutex_);
        if (!write_stopping_ && open_) {
            const auto now = std::chrono::steady_clock::now();
            for (auto& r : rs) {
                r.queued = now;
                write_queue_.push_back(std::move(r));
            }
            write_cv_.notify_one();
            return;
        }
    }
    for (auto& r : rs) r.done(closed_error());
}

void executor::push_read(read_request r) {
    {
        std::lock_guard lock(read_mutex_);
        if (!read_stopping_ && open_) {
            read_queue_.push_back(std::move(r));
            read_cv_.notify_one();
            return;
        }
    }
    r.done(closed_error());
}

asio::awaitable<void> executor::write(write_fn fn) {
    auto initiate = [this, &fn](auto handler) {
        std::vector<write_request> one;
        one.push_back(write_request{std::move(fn), completion_for(std::move(handler))});
        push_writes(std::move(one));
    };
    co_await asio::async_initiate<decltype(asio::use_awaitable), void(std::exception_ptr)>(
        initiate, asio::use_awaitable);
}

asio::awaitable<std::vector<std::exception_ptr>> executor::write_each(std::vector<write_fn> fns) {
    using result = std::vector<std::exception_ptr>;
    if (fns.empty()) co_return result{};
    auto initiate = [this, &fns](auto handler) {
        // The parts complete one by one on the caller's executor; the last one resumes the
        // caller with everybody's errors.
        using handler_type = std::decay_t<decltype(handler)>;
        struct shared {
            handler_type handler;
            result errors;
            std::size_t remaining;
        };
        auto ex = tracked_executor(handler);
        auto state =
            std::make_shared<shared>(shared{std::move(handler), result(fns.size()), fns.size()});
        std::vector<write_request> requests;
        requests.reserve(fns.size());
        for (std::size_t i = 0; i < fns.size(); ++i) {
            completion part{ex, [state, i](std::exception_ptr e) {
                                state->errors[i] = e;
                                if (--state->remaining == 0)
                                    std::move(state->handler)(std::move(state->errors));
                            }};
            requests.push_back(write_request{std::move(fns[i]), std::move(part)});
        }
        push_writes(std::move(requests));
    };
    co_return co_await asio::async_initiate<decltype(asio::use_awaitable), void(result)>(
        initiate, asio::use_awaitable);
}

asio::awaitable<void> executor::read(read_fn fn) {
    auto initiate = [this, &fn](auto handler) {
        push_read(read_request{std::move(fn), completion_for(std::move(handler))});
    };
    co_await asio::async_initiate<decltype(asio::use_awaitable), void(std::exception_ptr)>(
        initiate, asio::use_awaitable);
}

asio::awaitable<bool> executor::writable() {
    try {
        co_await write([](write_context& ctx) { ctx.db.query("SELECT txid_current()"); });
        co_return true;
    } catch (const std::exception&) {
        co_return false;
    }
}

void executor::direct(const read_fn& fn) {
    auto db = connect();
    fn(*db);
}

void executor::run_writer(std::unique_ptr<connection>& db) {
    // Requests queue while a batch runs and commits; the next batch takes all of them (up to
    // max_batch): under load one commit serves many requests.
    std::vector<write_request> batch;
    for (;;) {
        {
            std::unique_lock lock(write_mutex_);
            write_cv_.wait(lock, [&] { return write_stopping_ || !write_queue_.empty(); });
            if (write_queue_.empty()) return;  // stopping, and everything is done
            while (!write_queue_.empty() && batch.size() < settings_.max_batch) {
                batch.push_back(std::move(write_queue_.front()));
                write_queue_.pop_front();
            }
        }
        commit_batch(db, batch);
        batch.clear();
    }
}

std::vector<std::exception_ptr> executor::run_batch(connection& db,
                                                    std::vector<write_request>& batch,
                                                    std::vector<core::event>& events,
                                                    std::vector<std::string>& signals,
                                                    bool isolated, bool& committing) {
    // Without `isolated`, the first failure ends the batch (it is rolled back, the caller runs
    // it again isolated): a savepoint per request would cost two round trips each.
    std::vector<std::exception_ptr> errors(batch.size());
    events.clear();
    signals.clear();
    transaction tx(db);
    write_context ctx(db, events, signals);
    for (std::size_t i = 0; i < batch.size(); ++i) {
        if (!isolated) {
            batch[i].fn(ctx);
            continue;
        }
        const auto mark = events.size();
        const auto signal_mark = signals.size();
        db.query("SAVEPOINT w");
        try {
            batch[i].fn(ctx);
            ctx.flush();
            db.query("RELEASE w");
        } catch (const pg_error& e) {
            if (broken(&db)) throw;
            errors[i] = std::current_exception();
        } catch (...) {
            errors[i] = std::current_exception();
        }
        if (errors[i]) {
            events.resize(mark);
            signals.resize(signal_mark);
            ctx.discard();
            db.query("ROLLBACK TO w");
            db.query("RELEASE w");
        }
    }
    ctx.flush();
    // The COMMIT returns once the server has the transaction durable (synchronous_commit as
    // configured): PostgreSQL's counterpart of the fsync that makes a SQLite batch durable.
    // It goes out with the statement that takes the events' ids.
    const auto commit_start = std::chrono::steady_clock::now();
    committing = true;
    finish_transaction(tx, db, events, signals);
    stats_.syncs.fetch_add(1, std::memory_order_relaxed);
    stats_.sync_latency.observe(std::chrono::steady_clock::now() - commit_start);
    return errors;
}

void executor::commit_batch(std::unique_ptr<connection>& db, std::vector<write_request>& batch) {
    busy_guard busy(pool_.busy);
    std::vector<std::exception_ptr> errors(batch.size());
    std::exception_ptr batch_error;
    std::vector<core::event> events;
    std::vector<std::string> signals;
    try {
        for (bool retried = false;; retried = true) {
            if (broken(db.get())) {
                db.reset();
                db = connect();
            }
            bool committing = false;
            try {
                errors = run_batch(*db, batch, events, signals, false, committing);
            } catch (...) {
                if (broken(db.get())) {
                    if (committing || retried) throw;
                    continue;  // cut before anything was applied: once more, connected anew
                }
                // A write failed (or the commit): a batch of one has its answer; a larger one
                // runs again, each request in a savepoint of its own.
                if (batch.size() == 1) throw;
                errors = run_batch(*db, batch, events, signals, true, committing);
            }
            break;
        }
    } catch (...) {
        batch_error = std::current_exception();
        events.clear();
        if (broken(db.get())) {
            db.reset();
            reachable_.store(false, std::memory_order_release);
        }
    }
    stats_.batches.fetch_add(1, std::memory_order_relaxed);
    stats_.writes.fetch_add(batch.size(), std::memory_order_relaxed);
    if (batch_error) stats_.write_errors.fetch_add(batch.size(), std::memory_order_relaxed);
    const auto now = std::chrono::steady_clock::now();
    if (!events.empty()) {
        const auto upto = events.back().seq;
        try {
            deliver_upto(*db, upto, std::move(events));
        } catch (const std::exception& e) {
            // Committed: the listener delivers what this could not read.
            core::log(core::level::warn, std::string("delivering events: ") + e.what());
        }
    }
    for (std::size_t i = 0; i < batch.size(); ++i) {
        stats_.write_latency.observe(now - batch[i].queued);
        batch[i].done(batch_error ? batch_error : errors[i]);
    }
}

void executor::deliver_upto(connection& db, std::int64_t upto, std::vector<core::event> own) {
    std::lock_guard lock(deliver_mutex_);
    auto from = published_seq_.load(std::memory_order_relaxed);
    if (upto <= from) return;
    const auto now = std::chrono::steady_clock::now();
    auto hand_over = [&](std::vector<core::event> events) {
        if (events.empty()) return;
        for (auto& e : events) e.committed = now;
        published_seq_.store(events.back().seq, std::memory_order_release);
        if (on_commit) on_commit(std::move(events));
    };
    // What other nodes committed before the first of `own` (or up to `upto`) comes first.
    const auto own_first = own.empty() ? upto + 1 : own.front().seq;
    while (from < own_first - 1) {
        auto page = events_between(db, from, own_first - 1, 1000);
        pool_.catch_ups.fetch_add(1, std::memory_order_relaxed);
        if (page.empty()) break;
        from = page.back().seq;
        hand_over(std::move(page));
    }
    published_seq_.store(std::max(published_seq_.load(), own_first - 1), std::memory_order_release);
    std::erase_if(own, [&](const core::event& e) { return e.seq <= from; });
    hand_over(std::move(own));
    if (published_seq_.load(std::memory_order_relaxed) < upto)
        published_seq_.store(upto, std::memory_order_release);
}

void executor::run_reader() {
    std::unique_ptr<connection> db;
    for (;;) {
        read_request r;
        {
            std::unique_lock lock(read_mutex_);
            read_cv_.wait(lock, [this] { return read_stopping_ || !read_queue_.empty(); });
            if (read_queue_.empty()) return;
            r = std::move(read_queue_.front());
            read_queue_.pop_front();
        }
        std::exception_ptr error;
        busy_guard busy(pool_.busy);
        // A connection that sat idle may have been cut (the server restarted): a read that
        // finds it so runs again, once, on a new one.
        for (bool fresh = false; !fresh;) {
            try {
                fresh = broken(db.get());
                if (fresh) {
                    db.reset();
                    db = connect();
                }
                r.fn(*db);
                error = nullptr;
                break;
            } catch (...) {
                error = std::current_exception();
                if (!broken(db.get())) break;
                db.reset();
            }
        }
        stats_.reads.fetch_add(1, std::memory_order_relaxed);
        r.done(error);
    }
}

void executor::catch_up(connection& db) { deliver_upto(db, newest_event(db), {}); }

void executor::run_listener() {
    // Notifications announce other nodes' commits at once; every poll interval the listener
    // also reads the newest id (what it missed while deaf or disconnected) and proves that
    // it still hears: it notifies itself, and a connection that does not hear its own
    // notification by the next interval is made again.
    std::unique_ptr<connection> db;
    const std::string ping_prefix = "ping ";
    std::uint64_t pings_sent = 0, pings_heard = 0;
    auto next_poll = std::chrono::steady_clock::now();
    // Handles the notifications libpq has read; the reads of a delivery may bring more.
    auto take_notifications = [&] {
        for (bool any = true; any;) {
            any = false;
            std::int64_t newest = 0;
            while (PGnotify* n = PQnotifies(db->native())) {
                any = true;
                std::string_view payload = n->extra ? n->extra : "";
                pool_.notifications.fetch_add(1, std::memory_order_relaxed);
                std::int64_t seq = 0;
                if (payload.starts_with(ping_prefix)) {
                    if (n->be_pid == db->backend_pid()) pings_heard = pings_sent;
                } else if (auto [end, ec] = std::from_chars(payload.data(),
                                                            payload.data() + payload.size(), seq);
                           ec == std::errc{} && end == payload.data() + payload.size()) {
                    newest = std::max(newest, seq);
                } else if (on_signal) {
                    on_signal(payload);
                }
                PQfreemem(n);
            }
            if (newest > published_seq()) deliver_upto(*db, newest, {});
        }
    };
    while (!listen_stopping_.load()) {
        try {
            if (broken(db.get())) {
                db.reset();
                db = connect();
                db->exec(std::string("LISTEN ") + events_channel);
                pings_sent = pings_heard = 0;
                catch_up(*db);
                next_poll = std::chrono::steady_clock::now() + settings_.poll_interval;
            }
            const auto now = std::chrono::steady_clock::now();
            if (now >= next_poll) {
                if (pings_sent > pings_heard + 1) {
                    core::log(core::level::warn,
                              "the database connection that listens for other nodes' events "
                              "went deaf: connecting again");
                    db.reset();
                    continue;
                }
                catch_up(*db);
                ++pings_sent;
                const param p[] = {text_param(ping_prefix + std::to_string(pings_sent))};
                db->query("SELECT pg_notify('buzzer_events', $1)", p);
                next_poll = now + settings_.poll_interval;
            }
            // Notifications that came with the answers of the queries above wait in libpq's
            // queue, not on the socket: they are taken first.
            take_notifications();
            // Waits for a notification, the next poll or close().
            pollfd fds[2] = {{PQsocket(db->native()), POLLIN, 0}, {wake_pipe_[0], POLLIN, 0}};
            const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(
                next_poll - std::chrono::steady_clock::now());
            int rc = ::poll(fds, 2, static_cast<int>(std::max<long>(0, wait.count())));
            if (rc < 0 && errno != EINTR) throw std::runtime_error("poll failed");
            if (fds[1].revents) continue;  // stopping
            if (rc <= 0) continue;
            if (!PQconsumeInput(db->native())) {
                db.reset();
                continue;
            }
            take_notifications();
        } catch (const std::exception& e) {
            if (broken(db.get())) {
                db.reset();
                // Not reachable: try again after a poll interval (or at close()).
                pollfd fd{wake_pipe_[0], POLLIN, 0};
                ::poll(&fd, 1, static_cast<int>(settings_.poll_interval.count()));
            } else {
                core::log(core::level::warn, std::string("following events: ") + e.what());
            }
        }
    }
}

}  // namespace buzzer::store::postgres
