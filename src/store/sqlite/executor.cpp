#include "store/sqlite/executor.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/defer.hpp>
#include <boost/asio/execution/context.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/query.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cerrno>
#include <cstring>

#include "core/log.hpp"
#include "core/thread.hpp"
#include "store/sqlite/migrate.hpp"
#include "store/sqlite/queries.hpp"

namespace buzzer::store::sqlite {
namespace asio = boost::asio;

namespace {

void sync_file(int fd, const std::string& name) {
    int rc;
    do {
        rc = ::fdatasync(fd);
    } while (rc != 0 && errno == EINTR);
    // An fsync that fails (EIO, ENOSPC) may work later: the database is unavailable, not lost.
    if (rc != 0) throw database_error("fdatasync " + name + ": " + std::strerror(errno), true);
}

void sync_directory(const std::string& file) {
    auto slash = file.rfind('/');
    std::string dir = slash == std::string::npos ? "." : file.substr(0, slash == 0 ? 1 : slash);
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) throw std::runtime_error("cannot open " + dir + ": " + std::strerror(errno));
    int rc = ::fsync(fd);
    int err = errno;
    ::close(fd);
    if (rc != 0) throw std::runtime_error("fsync " + dir + ": " + std::strerror(err));
}

}  // namespace

std::int64_t write_context::add_event(std::string_view operation_id, std::string_view type,
                                      std::string data) {
    auto s =
        db.cached("INSERT INTO events (seq, operation_id, type, data) VALUES (?1, ?2, ?3, ?4)");
    const std::int64_t seq = ++last_seq_;
    s->bind(1, seq).bind(2, operation_id).bind(3, type).bind(4, std::string_view(data)).exec();
    events_.push_back(
        core::event{seq, std::string(operation_id), std::string(type), std::move(data)});
    return seq;
}

executor::executor(settings s) : settings_(std::move(s)) {}

executor::~executor() { close(); }

void executor::configure(connection& db, bool writer) const {
    db.exec("PRAGMA busy_timeout = 5000");
    db.exec("PRAGMA foreign_keys = ON");
    if (writer) {
        db.exec("PRAGMA journal_mode = WAL");
        // NORMAL: SQLite does not sync the WAL on commit, only around checkpoints. With
        // `synchronous_full` the syncer thread fdatasyncs the WAL after every commit instead,
        // and no writer is resumed (no 202 sent) before the fsync that covers its commit.
        db.exec("PRAGMA synchronous = NORMAL");
        // Checkpoints run on a thread of their own (run_checkpointer), not inside commits.
        db.exec("PRAGMA wal_autocheckpoint = 0");
        db.exec("PRAGMA journal_size_limit = 67108864");
    } else {
        db.exec("PRAGMA query_only = ON");
    }
}

void executor::open(const write_fn& startup) {
    writer_db_ = std::make_unique<connection>(settings_.path);
    configure(*writer_db_, true);
    migrate(*writer_db_, settings_.migrations);
    last_seq_ = newest_event(*writer_db_);
    if (startup) {
        std::vector<core::event> events;
        write_context ctx(*writer_db_, events, last_seq_);
        transaction tx(*writer_db_);
        startup(ctx);
        tx.commit();
    }
    if (settings_.synchronous_full) {
        // The WAL exists now (the migrations wrote to it): open it for the syncer, and make
        // its directory entry and everything so far durable before anything is accepted.
        wal_path_ = settings_.path + "-wal";
        wal_fd_ = ::open(wal_path_.c_str(), O_RDONLY | O_CLOEXEC);
        if (wal_fd_ < 0)
            throw std::runtime_error("cannot open " + wal_path_ + ": " + std::strerror(errno));
        sync_file(wal_fd_, wal_path_);
        sync_directory(settings_.path);
        syncer_ = std::thread([this] {
            core::name_this_thread("buzzer-syncer");
            run_syncer();
        });
    }
    checkpoint_db_ = std::make_unique<connection>(settings_.path);
    checkpoint_db_->exec("PRAGMA busy_timeout = 5000");
    // A connection learns that the database is in WAL mode (and opens the WAL) on its first
    // read; until then a checkpoint through it does nothing.
    checkpoint_db_->exec("SELECT count(*) FROM sqlite_master");
    writer_db_->on_wal_commit([this](int frames) {
        // Frames since the last checkpoint (the WAL starts over after a complete one).
        int base = checkpointed_frames_.load(std::memory_order_relaxed);
        if (frames < base) base = 0;
        if (frames - base < settings_.checkpoint_frames) return;
        {
            std::lock_guard lock(checkpoint_mutex_);
            wal_frames_ = frames;
        }
        checkpoint_cv_.notify_one();
    });
    checkpointer_ = std::thread([this] {
        core::name_this_thread("buzzer-ckpt");
        // Checkpoints only need to keep up on average: under load they yield the CPUs to the
        // writer, the syncer and the connections, which requests wait for.
        core::lower_this_thread_priority(10);
        run_checkpointer();
    });
    published_seq_.store(last_seq_);
    open_ = true;
    writer_ = std::thread([this] {
        core::name_this_thread("buzzer-writer");
        run_writer();
    });
    for (unsigned i = 0; i < std::max(1u, settings_.readers); ++i) {
        auto db = std::make_shared<connection>(settings_.path);
        configure(*db, false);
        readers_.emplace_back([this, db] {
            core::name_this_thread("buzzer-reader");
            run_reader(*db);
        });
    }
}

void executor::close() {
    {
        std::lock_guard lock(write_mutex_);
        write_stopping_ = true;
    }
    write_cv_.notify_all();
    if (writer_.joinable()) writer_.join();
    {
        std::lock_guard lock(sync_mutex_);
        sync_stopping_ = true;
    }
    sync_cv_.notify_all();
    if (syncer_.joinable()) syncer_.join();
    if (wal_fd_ >= 0) ::close(wal_fd_);
    wal_fd_ = -1;
    {
        std::lock_guard lock(checkpoint_mutex_);
        checkpoint_stopping_ = true;
    }
    checkpoint_cv_.notify_all();
    if (checkpointer_.joinable()) checkpointer_.join();
    checkpoint_db_.reset();
    {
        std::lock_guard lock(read_mutex_);
        read_stopping_ = true;
    }
    read_cv_.notify_all();
    for (auto& t : readers_)
        if (t.joinable()) t.join();
    readers_.clear();
    writer_db_.reset();
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
        // The requests complete one by one on the caller's executor (one thread at a time);
        // the last one resumes the caller with everybody's errors.
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
        co_await write([](write_context& ctx) {
            ctx.db
                .cached(
                    "INSERT OR REPLACE INTO schema_migrations (version, name, applied_at) "
                    "SELECT version, name, applied_at FROM schema_migrations "
                    "WHERE version = (SELECT max(version) FROM schema_migrations)")
                ->exec();
        });
        co_return true;
    } catch (const std::exception&) {
        co_return false;
    }
}

void executor::run_writer() {
    // Requests run as they arrive, in a transaction that stays open while the syncer is busy
    // with the fsync of the previous commit, and is committed when the syncer is free: under
    // load one commit per fsync, each as large as the fsync before it was long.
    std::vector<write_request> batch;  // run in the open transaction
    std::vector<core::event> events;
    std::optional<transaction> tx;
    std::exception_ptr failure;  // of a request of the open transaction
    std::int64_t first_seq = last_seq_;
    std::vector<write_request> incoming;
    for (;;) {
        bool stopping = false;
        {
            std::unique_lock lock(write_mutex_);
            write_cv_.wait(lock, [&] {
                if (write_stopping_) return true;
                if (!batch.empty() && (!sync_busy_ || restart_pending_)) return true;
                return !write_queue_.empty() && !restart_pending_;
            });
            stopping = write_stopping_;
            if (stopping && write_queue_.empty() && batch.empty()) return;
            if (!restart_pending_ || stopping) {
                while (!write_queue_.empty() &&
                       batch.size() + incoming.size() < settings_.max_batch) {
                    incoming.push_back(std::move(write_queue_.front()));
                    write_queue_.pop_front();
                }
            }
        }
        if (!incoming.empty()) {
            if (!tx) {
                try {
                    tx.emplace(*writer_db_);
                } catch (...) {
                    failure = std::current_exception();
                }
                first_seq = last_seq_;
            }
            if (!failure) {
                write_context ctx(*writer_db_, events, last_seq_);
                for (auto& r : incoming) {
                    try {
                        r.fn(ctx);
                    } catch (...) {
                        failure = std::current_exception();
                        break;
                    }
                }
            }
            for (auto& r : incoming) batch.push_back(std::move(r));
            incoming.clear();
        }
        if (batch.empty()) continue;
        const bool sync_free = !settings_.synchronous_full || !sync_busy_.load();
        if (failure || sync_free || restart_pending_.load() || stopping ||
            batch.size() >= settings_.max_batch) {
            commit_batch(batch, events, tx, failure, first_seq);
            batch.clear();
            events.clear();
            failure = nullptr;
        }
    }
}

void executor::run_isolated(std::vector<write_request>& batch, std::vector<core::event>& events,
                            std::vector<std::exception_ptr>& errors) {
    connection& db = *writer_db_;
    events.clear();
    transaction tx(db);
    write_context ctx(db, events, last_seq_);
    for (std::size_t i = 0; i < batch.size(); ++i) {
        // A savepoint per request: one failing request does not undo the others.
        std::size_t mark = events.size();
        db.cached("SAVEPOINT w")->exec();
        try {
            batch[i].fn(ctx);
            db.cached("RELEASE w")->exec();
        } catch (...) {
            errors[i] = std::current_exception();
            events.resize(mark);
            db.cached("ROLLBACK TO w")->exec();
            db.cached("RELEASE w")->exec();
        }
    }
    tx.commit();
}

void executor::commit_batch(std::vector<write_request>& batch, std::vector<core::event>& events,
                            std::optional<transaction>& tx, std::exception_ptr failure,
                            std::int64_t first_seq) {
    committed c;
    c.errors.resize(batch.size());
    try {
        if (failure) {
            // Requests rarely fail, and a savepoint per request costs a statement journal that
            // copies every page it touches: the batch ran without them, and now that one
            // failed it is rolled back and run again, each request in a savepoint of its own.
            // The ids of the rolled-back events are handed out again.
            tx.reset();
            last_seq_ = first_seq;
            if (batch.size() == 1)
                c.errors[0] = failure;
            else
                run_isolated(batch, c.events, c.errors);
        } else {
            tx->commit();
            tx.reset();
            c.events = std::move(events);
        }
    } catch (...) {
        tx.reset();
        c.commit_error = std::current_exception();
        c.events.clear();
    }
    stats_.batches.fetch_add(1, std::memory_order_relaxed);
    stats_.writes.fetch_add(batch.size(), std::memory_order_relaxed);
    if (c.commit_error) stats_.write_errors.fetch_add(batch.size(), std::memory_order_relaxed);
    c.waiters.reserve(batch.size());
    c.queued.reserve(batch.size());
    for (auto& r : batch) {
        c.waiters.push_back(std::move(r.done));
        c.queued.push_back(r.queued);
    }
    if (!settings_.synchronous_full || c.commit_error) {
        deliver(c);
        return;
    }
    {
        std::lock_guard lock(sync_mutex_);
        sync_busy_ = true;
        sync_queue_.push_back(std::move(c));
    }
    sync_cv_.notify_one();
}

void executor::run_syncer() {
    std::vector<committed> ready;
    for (;;) {
        {
            std::unique_lock lock(sync_mutex_);
            sync_cv_.wait(lock, [this] { return sync_stopping_ || !sync_queue_.empty(); });
            if (sync_queue_.empty()) return;  // stopping, and every commit is delivered
            for (auto& c : sync_queue_) ready.push_back(std::move(c));
            sync_queue_.clear();
        }
        // One fsync covers every commit queued before it started: under load, commits that
        // the writer made during the previous fsync share this one.
        std::exception_ptr error;
        const auto started = std::chrono::steady_clock::now();
        try {
            sync_file(wal_fd_, wal_path_);
        } catch (...) {
            error = std::current_exception();
            stats_.write_errors.fetch_add(1, std::memory_order_relaxed);
        }
        stats_.sync_latency.observe(std::chrono::steady_clock::now() - started);
        stats_.syncs.fetch_add(1, std::memory_order_relaxed);
        for (auto& c : ready) {
            if (error) {
                // Committed but maybe not durable: nobody is told it is.
                c.commit_error = error;
                c.events.clear();
            }
            deliver(c);
        }
        ready.clear();
        bool idle = false;
        {
            std::lock_guard lock(sync_mutex_);
            idle = sync_queue_.empty();
        }
        if (idle) {
            // The writer commits what it has run meanwhile: its fsync starts now.
            {
                std::lock_guard lock(write_mutex_);
                sync_busy_ = false;
            }
            write_cv_.notify_one();
        }
    }
}

void executor::run_checkpointer() {
    for (;;) {
        int frames = 0;
        {
            std::unique_lock lock(checkpoint_mutex_);
            checkpoint_cv_.wait(lock, [this] { return checkpoint_stopping_ || wal_frames_ > 0; });
            if (checkpoint_stopping_) return;
            frames = wal_frames_;
            wal_frames_ = 0;
        }
        try {
            // PASSIVE copies what it can while the writer goes on. Under steady writes the WAL
            // is never wholly copied at the moment a transaction starts, so it is not started
            // anew and keeps growing: past a bound, one checkpoint waits for the writer.
            const bool restart = frames >= settings_.restart_frames;
            if (restart) {
                // The writer commits what it has and opens no transaction until this is done.
                {
                    std::lock_guard lock(write_mutex_);
                    restart_pending_ = true;
                }
                write_cv_.notify_one();
            }
            struct resume_writer {
                executor& s;
                bool active;
                ~resume_writer() {
                    if (!active) return;
                    {
                        std::lock_guard lock(s.write_mutex_);
                        s.restart_pending_ = false;
                    }
                    s.write_cv_.notify_one();
                }
            } resume{*this, restart};
            int log = checkpoint_db_->checkpoint(restart);
            checkpointed_frames_.store(log, std::memory_order_relaxed);
            stats_.checkpoints.fetch_add(1, std::memory_order_relaxed);
        } catch (const std::exception& e) {
            core::log(core::level::warn, std::string("checkpoint: ") + e.what());
        }
    }
}

void executor::deliver(committed& c) {
    const auto now = std::chrono::steady_clock::now();
    for (auto& e : c.events) e.committed = now;
    for (auto t : c.queued) stats_.write_latency.observe(now - t);
    if (!c.events.empty()) {
        // Before the hub has them: a replay that reads up to here and a subscription made
        // before it together see every event once.
        published_seq_.store(c.events.back().seq, std::memory_order_release);
        if (on_commit) on_commit(std::move(c.events));
    }
    auto error_of = [&c](std::size_t i) { return c.commit_error ? c.commit_error : c.errors[i]; };
    if (c.waiters.size() == 1) {
        c.waiters[0](error_of(0));
        return;
    }
    // One hand-over to each I/O thread that has waiters instead of a wake-up per waiter: the
    // first waiter's executor on that thread runs a function that defers each of that thread's
    // waiters to its own executor (deferred from the thread itself, they go to its private
    // queue, with no wake-up). Waiters of another thread are never resumed through this one.
    struct resumption {
        completion done;
        std::exception_ptr error;
    };
    using resumptions = std::vector<resumption>;
    std::vector<std::pair<asio::execution_context*, std::shared_ptr<resumptions>>> threads;
    for (std::size_t i = 0; i < c.waiters.size(); ++i) {
        auto* ctx = &asio::query(c.waiters[i].executor, asio::execution::context);
        auto it = std::find_if(threads.begin(), threads.end(),
                               [ctx](const auto& t) { return t.first == ctx; });
        if (it == threads.end()) {
            threads.emplace_back(ctx, std::make_shared<resumptions>());
            threads.back().second->reserve(c.waiters.size());
            it = std::prev(threads.end());
        }
        it->second->push_back({std::move(c.waiters[i]), error_of(i)});
    }
    for (auto& [ctx, batch] : threads) {
        auto first = batch->front().done.executor;
        asio::post(first, [batch = std::move(batch)] {
            for (auto& r : *batch)
                asio::defer(r.done.executor,
                            [fn = std::move(r.done.resume), e = r.error]() mutable { fn(e); });
        });
    }
}

void executor::run_reader(connection& db) {
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
        try {
            r.fn(db);
        } catch (...) {
            error = std::current_exception();
        }
        stats_.reads.fetch_add(1, std::memory_order_relaxed);
        r.done(error);
    }
}

}  // namespace buzzer::store::sqlite
