#include "store/store.hpp"

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "runtime/embedded.hpp"
#include "store/migrate.hpp"

namespace buzzer::store {
namespace asio = boost::asio;

namespace {

// Wraps an Asio completion handler so a store thread can complete it: the handler runs on
// its own executor, which is kept busy (outstanding work) until then.
template <class Handler>
std::function<void(std::exception_ptr)> completion_for(Handler&& handler) {
    auto ex = asio::prefer(asio::get_associated_executor(handler),
                           asio::execution::outstanding_work.tracked);
    auto h = std::make_shared<std::decay_t<Handler>>(std::forward<Handler>(handler));
    return
        [h, ex](std::exception_ptr e) { asio::post(ex, [h, e]() mutable { std::move (*h)(e); }); };
}

}  // namespace

std::int64_t write_context::add_event(std::string_view operation_id, std::string_view type,
                                      std::string data) {
    auto s = db.cached("INSERT INTO events (operation_id, type, data) VALUES (?1, ?2, ?3)");
    s->bind(1, operation_id).bind(2, type).bind(3, std::string_view(data)).exec();
    std::int64_t seq = db.last_insert_rowid();
    events_.push_back(event{seq, std::string(operation_id), std::string(type), std::move(data)});
    return seq;
}

store::store(settings s) : settings_(std::move(s)) {}

store::~store() { close(); }

void store::configure(connection& db, bool writer) const {
    db.exec("PRAGMA busy_timeout = 5000");
    db.exec("PRAGMA foreign_keys = ON");
    if (writer) {
        db.exec("PRAGMA journal_mode = WAL");
        db.exec(settings_.synchronous_full ? "PRAGMA synchronous = FULL"
                                           : "PRAGMA synchronous = NORMAL");
    } else {
        db.exec("PRAGMA query_only = ON");
    }
}

void store::open(const write_fn& startup) {
    writer_db_ = std::make_unique<connection>(settings_.path);
    configure(*writer_db_, true);
    migrate(*writer_db_, embedded::migrations());
    if (startup) {
        std::vector<event> events;
        write_context ctx(*writer_db_, events);
        transaction tx(*writer_db_);
        startup(ctx);
        tx.commit();
    }
    open_ = true;
    writer_ = std::thread([this] { run_writer(); });
    for (unsigned i = 0; i < std::max(1u, settings_.readers); ++i) {
        auto db = std::make_shared<connection>(settings_.path);
        configure(*db, false);
        readers_.emplace_back([this, db] { run_reader(*db); });
    }
}

void store::close() {
    {
        std::lock_guard lock(write_mutex_);
        write_stopping_ = true;
    }
    write_cv_.notify_all();
    if (writer_.joinable()) writer_.join();
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

void store::push_write(write_request r) {
    {
        std::lock_guard lock(write_mutex_);
        if (!write_stopping_ && open_) {
            write_queue_.push_back(std::move(r));
            write_cv_.notify_one();
            return;
        }
    }
    r.done(std::make_exception_ptr(std::runtime_error("the store is closed")));
}

void store::push_read(read_request r) {
    {
        std::lock_guard lock(read_mutex_);
        if (!read_stopping_ && open_) {
            read_queue_.push_back(std::move(r));
            read_cv_.notify_one();
            return;
        }
    }
    r.done(std::make_exception_ptr(std::runtime_error("the store is closed")));
}

asio::awaitable<void> store::write(write_fn fn) {
    auto initiate = [this, &fn](auto handler) {
        push_write(write_request{std::move(fn), completion_for(std::move(handler))});
    };
    co_await asio::async_initiate<decltype(asio::use_awaitable), void(std::exception_ptr)>(
        initiate, asio::use_awaitable);
}

asio::awaitable<void> store::read(read_fn fn) {
    auto initiate = [this, &fn](auto handler) {
        push_read(read_request{std::move(fn), completion_for(std::move(handler))});
    };
    co_await asio::async_initiate<decltype(asio::use_awaitable), void(std::exception_ptr)>(
        initiate, asio::use_awaitable);
}

asio::awaitable<bool> store::writable() {
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

void store::run_writer() {
    std::vector<write_request> batch;
    for (;;) {
        {
            std::unique_lock lock(write_mutex_);
            write_cv_.wait(lock, [this] { return write_stopping_ || !write_queue_.empty(); });
            if (write_queue_.empty()) return;  // stopping, and everything is written
            while (!write_queue_.empty() && batch.size() < settings_.max_batch) {
                batch.push_back(std::move(write_queue_.front()));
                write_queue_.pop_front();
            }
        }
        commit_batch(batch);
        batch.clear();
    }
}

void store::commit_batch(std::vector<write_request>& batch) {
    connection& db = *writer_db_;
    std::vector<event> events;
    std::vector<std::exception_ptr> errors(batch.size());
    std::exception_ptr commit_error;
    try {
        transaction tx(db);
        write_context ctx(db, events);
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
        const auto now = std::chrono::steady_clock::now();
        for (auto& e : events) e.committed = now;
    } catch (...) {
        commit_error = std::current_exception();
        events.clear();
    }
    stats_.batches.fetch_add(1, std::memory_order_relaxed);
    stats_.writes.fetch_add(batch.size(), std::memory_order_relaxed);
    if (commit_error) stats_.write_errors.fetch_add(batch.size(), std::memory_order_relaxed);
    if (!events.empty() && on_commit) on_commit(std::move(events));
    for (std::size_t i = 0; i < batch.size(); ++i)
        batch[i].done(commit_error ? commit_error : errors[i]);
}

void store::run_reader(connection& db) {
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

}  // namespace buzzer::store
