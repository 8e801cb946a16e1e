// The PostgreSQL executor: writer threads that group-commit the writes that arrive while their
// previous commit runs (one transaction, one commit for many requests; while one writer's
// batch commits, another builds the next), reader threads, and
// the delivery of committed events in id order, this node's and those of every other node on
// the database. Each thread has a connection of its own, made again after it broke; nothing
// here runs on an I/O thread.
#pragma once

#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/event.hpp"
#include "store/completion.hpp"
#include "store/postgres/connection.hpp"
#include "store/postgres/queries.hpp"
#include "store/store.hpp"

namespace buzzer::store::postgres {

/// What a write function sees: the writer connection inside the batch's transaction.
class write_context {
  public:
    write_context(connection& db, std::vector<core::event>& events,
                  std::vector<std::string>& signals)
        : db(db), events_(events), signals_(signals) {}
    write_context(const write_context&) = delete;
    write_context& operator=(const write_context&) = delete;
    /// The writer connection.
    connection& db;
    /// Appends an event; its id is taken when the batch commits (in commit order across the
    /// nodes), and it is handed to `on_commit` once the commit is durable.
    void add_event(std::string_view operation_id, std::string_view type, std::string data);
    /// Sends `payload` to every node's `on_signal` when the batch commits (once, however many
    /// writes of the batch send it). Not a decimal number, nor starting with "ping ".
    void signal(std::string payload);
    /// Inserts `op` (running on `node` when started at once) together with the other
    /// insertions of the batch, in one statement before the batch's events; `row` is set then.
    /// `op` and `row` must outlive the write; nothing of the batch may read the row before.
    void insert_operation(const core::operation& op, std::string_view node, std::int64_t& row);
    /// Runs the insertions added so far (the executor does, before the batch's events).
    void flush();
    /// Forgets the insertions not run yet (of a write rolled back).
    void discard() { inserts_.clear(); }

  private:
    std::vector<core::event>& events_;
    std::vector<std::string>& signals_;
    std::vector<new_operation> inserts_;
};

/// The database: schema, writer thread, reader threads, event delivery.
class executor {
  public:
    struct settings {
        std::string uri;
        unsigned readers = 2;
        /// Writer threads (connections), each running batches of its own. Their transactions
        /// overlap up to the event ids, which they take one after the other (in commit order).
        unsigned writers = 2;
        std::size_t max_batch = 1024;  ///< writes in one commit at most
        std::vector<migration> migrations;
        /// How often the listener looks for events it was not told of, and proves that it
        /// still hears notifications.
        std::chrono::milliseconds poll_interval{1000};
    };
    using write_fn = std::function<void(write_context&)>;
    using read_fn = std::function<void(connection&)>;

    explicit executor(settings s);
    ~executor();
    executor(const executor&) = delete;
    executor& operator=(const executor&) = delete;

    /// Connects, brings the schema up to date, runs `startup` in one transaction (recovery)
    /// and starts the threads. Throws when the database cannot be used.
    void open(const write_fn& startup = {});

    /// Finishes queued work and joins the threads. Later calls fail.
    void close();

    /// Runs `fn` in the next group commit and resumes the caller once it is committed.
    /// An exception from `fn` (its changes are rolled back) or from the commit is rethrown.
    /// `fn` may run more than once (its batch is run again when another request of it fails),
    /// so it must not change anything but the database and its own outputs.
    boost::asio::awaitable<void> write(write_fn fn);

    /// Runs every function of `fns` as a write of its own and resumes the caller once, when
    /// all are committed, with the exception of each (null for those that succeeded).
    boost::asio::awaitable<std::vector<std::exception_ptr>> write_each(std::vector<write_fn> fns);

    /// Runs `fn` on a reader connection (autocommit: a snapshot per statement).
    boost::asio::awaitable<void> read(read_fn fn);

    /// Whether a write round trip succeeds now.
    boost::asio::awaitable<bool> writable();

    /// Runs `fn` on a connection of the calling thread's own, made for this call (start-up
    /// and the commands beside a server).
    void direct(const read_fn& fn);

    /// Called with committed events in id order, once each, this node's and every other's.
    std::function<void(std::vector<core::event>)> on_commit;

    /// Called on the listener's thread with every signal that a commit on any node sent.
    std::function<void(std::string_view)> on_signal;

    /// Hands every event committed so far, on any node, to `on_commit` (read through `db`).
    void catch_up(connection& db);

    /// The newest event id handed to `on_commit`.
    std::int64_t published_seq() const { return published_seq_.load(std::memory_order_acquire); }

    /// Whether the last attempt to reach the database succeeded.
    bool reachable() const { return reachable_.load(std::memory_order_acquire); }

    const store_stats& stats() const { return stats_; }
    const pool_stats& pool() const { return pool_; }

  private:
    struct write_request {
        write_fn fn;
        completion done;
        std::chrono::steady_clock::time_point queued{};
    };
    struct read_request {
        read_fn fn;
        completion done;
    };

    std::unique_ptr<connection> connect();
    void run_writer(std::unique_ptr<connection>& db);
    void run_reader();
    void run_listener();
    // Runs `batch` on `db` (made again first when it broke; reset when it breaks). A
    // connection found cut before the COMMIT was sent (it sat idle while the server
    // restarted) is made again and the batch runs once more: nothing of it was applied.
    void commit_batch(std::unique_ptr<connection>& db, std::vector<write_request>& batch);
    // `committing` turns true once the COMMIT is sent: from then on a failure leaves the
    // outcome unknown, and the batch must not run again.
    std::vector<std::exception_ptr> run_batch(connection& db, std::vector<write_request>& batch,
                                              std::vector<core::event>& events,
                                              std::vector<std::string>& signals, bool isolated,
                                              bool& committing);
    // Hands every event up to `upto` to on_commit in id order: `own` (ids set) where they
    // cover it, the rest read through `db`. Serialized between the writer and the listener.
    void deliver_upto(connection& db, std::int64_t upto, std::vector<core::event> own);
    void push_writes(std::vector<write_request> rs);
    void push_read(read_request r);

    settings settings_;
    /// One per writer thread, used by it alone (the first one also by open()).
    std::vector<std::unique_ptr<connection>> writer_dbs_;
    std::atomic<std::int64_t> published_seq_{0};
    std::atomic<bool> reachable_{true};
    store_stats stats_;
    pool_stats pool_;

    std::mutex deliver_mutex_;  ///< one delivery at a time, in id order

    std::mutex write_mutex_;
    std::condition_variable write_cv_;
    std::deque<write_request> write_queue_;
    bool write_stopping_ = false;
    std::mutex read_mutex_;
    std::condition_variable read_cv_;
    std::deque<read_request> read_queue_;
    bool read_stopping_ = false;
    std::atomic<bool> listen_stopping_{false};
    int wake_pipe_[2] = {-1, -1};  ///< wakes the listener out of its wait to stop
    bool open_ = false;

    std::vector<std::thread> writers_;
    std::thread listener_;
    std::vector<std::thread> readers_;
};

}  // namespace buzzer::store::postgres
