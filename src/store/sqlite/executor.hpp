// The SQLite executor: one writer thread that runs writes as they arrive and group-commits
// them (one commit per fsync under load), a syncer thread that fsyncs the WAL before anybody
// is told, a checkpointer, and reader threads with their own connections. Coroutines co_await
// writes and reads; nothing here runs on an I/O thread.
#pragma once

#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/event.hpp"
#include "store/completion.hpp"
#include "store/sqlite/connection.hpp"
#include "store/store.hpp"

namespace buzzer::store::sqlite {

/// What a write function sees: the writer connection inside the batch's transaction.
class write_context {
  public:
    write_context(connection& db, std::vector<core::event>& events, std::int64_t& last_seq)
        : db(db), events_(events), last_seq_(last_seq) {}
    /// The writer connection.
    connection& db;
    /// Appends an event row with the next global id; it is handed to `on_commit` once the
    /// batch is durable. Ids of rolled-back events are not reused (gaps are allowed).
    std::int64_t add_event(std::string_view operation_id, std::string_view type, std::string data);

  private:
    std::vector<core::event>& events_;
    std::int64_t& last_seq_;
};

/// The database: schema, writer thread, reader threads.
class executor {
  public:
    struct settings {
        std::string path;
        bool synchronous_full = true;
        unsigned readers = 2;
        std::size_t max_batch = 4096;  ///< writes in one commit at most
        /// WAL frames (4 KiB pages) written since the last checkpoint that start the next one,
        /// and the WAL size past which a checkpoint waits for the writer so that the WAL
        /// starts over.
        int checkpoint_frames = 1000;
        int restart_frames = 16000;
        std::vector<migration> migrations;  ///< the schema, applied at open
    };
    using write_fn = std::function<void(write_context&)>;
    using read_fn = std::function<void(connection&)>;

    explicit executor(settings s);
    ~executor();
    executor(const executor&) = delete;
    executor& operator=(const executor&) = delete;

    /// Opens the database and brings the schema up to date. Runs `startup` on the writer
    /// connection in one transaction (recovery), then starts the threads.
    void open(const write_fn& startup = {});

    /// Finishes queued work and joins the threads. Later calls fail.
    void close();

    /// Runs `fn` in the next group commit and resumes the caller once it is durable.
    /// An exception from `fn` (its changes are rolled back) or from the commit is rethrown.
    /// `fn` may run more than once (its batch is run again when another request of it fails),
    /// so it must not change anything but the database and its own outputs.
    boost::asio::awaitable<void> write(write_fn fn);

    /// Runs every function of `fns` as a write of its own (one failing does not undo the
    /// others) and resumes the caller once, when all are durable, with the exception of each
    /// (null for those that succeeded).
    boost::asio::awaitable<std::vector<std::exception_ptr>> write_each(std::vector<write_fn> fns);

    /// Runs `fn` on a reader connection (a consistent WAL snapshot per call).
    boost::asio::awaitable<void> read(read_fn fn);

    /// Whether a write round trip currently succeeds (for /readyz).
    boost::asio::awaitable<bool> writable();

    /// Called on the writer thread after each commit with its events, in commit order.
    std::function<void(std::vector<core::event>)> on_commit;

    /// The newest event id that is durable and handed to `on_commit`. A reader sees commits
    /// that their fsync has not covered yet; replays stop here, and what follows comes live.
    std::int64_t published_seq() const { return published_seq_.load(std::memory_order_acquire); }

    /// Writer and reader counters.
    const store_stats& stats() const { return stats_; }

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

    void configure(connection& db, bool writer) const;
    void run_writer();
    void run_reader(connection& db);
    // A batch after its commit, until it is durable and its waiters are resumed.
    struct committed {
        std::vector<core::event> events;
        std::vector<completion> waiters;
        std::vector<std::chrono::steady_clock::time_point> queued;
        std::vector<std::exception_ptr> errors;
        std::exception_ptr commit_error;
    };

    void commit_batch(std::vector<write_request>& batch, std::vector<core::event>& events,
                      std::optional<transaction>& tx, std::exception_ptr failure,
                      std::int64_t first_seq);
    void run_syncer();
    void run_checkpointer();
    void deliver(committed& c);
    void run_isolated(std::vector<write_request>& batch, std::vector<core::event>& events,
                      std::vector<std::exception_ptr>& errors);
    void push_writes(std::vector<write_request> rs);
    void push_read(read_request r);

    settings settings_;
    std::unique_ptr<connection> writer_db_;
    std::int64_t last_seq_ = 0;  ///< the newest event id handed out; writer thread only
    std::atomic<std::int64_t> published_seq_{0};
    store_stats stats_;

    std::mutex write_mutex_;
    std::condition_variable write_cv_;
    std::deque<write_request> write_queue_;
    std::mutex read_mutex_;
    std::condition_variable read_cv_;
    std::deque<read_request> read_queue_;
    bool write_stopping_ = false;
    /// An fsync is running or queued: the writer keeps its transaction open meanwhile.
    std::atomic<bool> sync_busy_{false};
    /// A checkpoint waits for the writer lock: no new transaction until it is done.
    std::atomic<bool> restart_pending_{false};
    bool read_stopping_ = false;
    bool open_ = false;

    std::mutex sync_mutex_;
    std::condition_variable sync_cv_;
    std::vector<committed> sync_queue_;
    bool sync_stopping_ = false;
    std::string wal_path_;  ///< the WAL file the syncer fsyncs, and its descriptor
    int wal_fd_ = -1;

    std::unique_ptr<connection> checkpoint_db_;
    std::mutex checkpoint_mutex_;
    std::condition_variable checkpoint_cv_;
    int wal_frames_ = 0;
    std::atomic<int> checkpointed_frames_{0};
    bool checkpoint_stopping_ = false;

    std::thread writer_;
    std::thread syncer_;
    std::thread checkpointer_;
    std::vector<std::thread> readers_;
};

}  // namespace buzzer::store::sqlite
