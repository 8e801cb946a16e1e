// The scheduler: an in-memory ready queue (priority, then age) fed after each commit, per-kind
// and global concurrency limits, and one coroutine per running attempt. Its state lives on
// its own strand.
#pragma once

#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/lifecycle.hpp"
#include "jobs/kinds.hpp"
#include "store/store.hpp"

namespace buzzer::jobs {

/// Settings of the scheduler.
struct scheduler_settings {
    unsigned max_running = 256;
};

/// Counters of the scheduler, for /metrics.
struct scheduler_stats {
    std::atomic<std::uint64_t> attempts{0};
    std::atomic<std::uint64_t> succeeded{0};
    std::atomic<std::uint64_t> failed{0};
    std::atomic<std::uint64_t> retried{0};
    std::atomic<std::uint64_t> canceled{0};
    std::atomic<std::int64_t> running{0};
    std::atomic<std::int64_t> pending{0};
};

/// Items handed to one consumer from any thread: whoever adds the first item after a take
/// is told so, and schedules the next take; the items added meanwhile go with it.
template <class T>
class handoff {
  public:
    /// Adds `item`; true when the list was empty (a take is due).
    bool push(T item) {
        std::lock_guard lock(mutex_);
        items_.push_back(std::move(item));
        return items_.size() == 1;
    }
    /// Everything added since the last take.
    std::vector<T> take() {
        std::vector<T> out;
        std::lock_guard lock(mutex_);
        out.swap(items_);
        return out;
    }

  private:
    std::mutex mutex_;
    std::vector<T> items_;
};

/// Runs pending operations.
class scheduler {
  public:
    scheduler(boost::asio::io_context& io, store::store& db, const kind_registry& kinds,
              scheduler_settings settings);
    ~scheduler();
    scheduler(const scheduler&) = delete;
    scheduler& operator=(const scheduler&) = delete;

    /// Queues the pending operations found at start (before start()).
    void load(const std::vector<core::queued>& pending);

    /// Starts claiming work.
    void start();

    /// Queues a newly committed pending operation; callable from any thread. `caller` is the
    /// executor the call runs on: the operations queued by the handlers it runs in a row reach
    /// the scheduler together, with one wake-up of the scheduler's thread.
    void enqueue(core::queued q, const boost::asio::any_io_executor& caller);

    /// A slot taken for a new operation that is to run at once; given back when dropped,
    /// unless adopt() spends it.
    class place {
      public:
        place() = default;
        place(place&& o) noexcept : owner_(std::exchange(o.owner_, nullptr)) {}
        place& operator=(place&&) = delete;
        ~place() {
            if (owner_) owner_->release();
        }
        explicit operator bool() const { return owner_ != nullptr; }

      private:
        friend class scheduler;
        explicit place(scheduler* owner) : owner_(owner) {}
        scheduler* owner_ = nullptr;
    };

    /// Asks, from any thread, for a place to run a new operation at once instead of queueing
    /// it: given while a slot is free and no queued operation could take it, for kinds without
    /// a concurrency limit of their own (an empty place otherwise). The caller then stores the
    /// operation as running, its first attempt counted (in the commit that accepts it), and
    /// hands it over with adopt(); a place dropped unspent is given back.
    place reserve(std::string_view kind);

    /// Runs an operation stored as running in `p`; callable from any thread (`caller` as for
    /// enqueue()).
    void adopt(place p, core::operation op, const boost::asio::any_io_executor& caller);

    /// What a cancel request found.
    enum class cancel_state {
        not_active,         ///< not running; removed from the queue if it was there
        cancelling,         ///< running: this call asked its job to stop
        already_cancelling  ///< running, and an earlier cancel asked its job to stop
    };

    /// Cancels a running job, or takes a queued operation out of the queue.
    boost::asio::awaitable<cancel_state> cancel(std::string id);

    /// Stops claiming, hands running jobs back to pending, and waits for them until
    /// `deadline` (the end of the server's shutdown grace); commands still running shortly
    /// before it are killed.
    boost::asio::awaitable<void> shutdown(std::chrono::steady_clock::time_point deadline);

    /// Counters.
    const scheduler_stats& stats() const { return stats_; }

  private:
    struct job_control;
    static auto job_failures(std::shared_ptr<job_control> ctrl);
    void spawn_job(const std::shared_ptr<job_control>& ctrl, core::operation op);
    struct entry {
        int priority;
        std::int64_t order;
        std::string id;
        bool operator<(const entry& o) const {
            if (priority != o.priority) return priority > o.priority;
            if (order != o.order) return order < o.order;
            return id < o.id;
        }
    };
    struct queued_info {
        std::string kind;
        entry e;
        core::millis run_after;
        bool delayed;
    };
    struct outcome;
    class attempt_context;

    void add(core::queued q);
    void take_incoming();
    void take_adopted();
    bool take_slot();
    void release();
    std::shared_ptr<job_control> track(std::string id, std::int64_t row, std::string kind);
    void pump();
    void arm_delay_timer();
    void release_due();
    void finished(const std::shared_ptr<job_control>& ctrl, std::optional<core::queued> again);
    // An attempt's outcome, to be written.
    struct settled {
        std::shared_ptr<job_control> ctrl;
        core::operation op;  ///< after the outcome
        std::vector<core::event> events;
        std::optional<core::result_body> result;  ///< of a success
        bool failed_attempt = false;
    };
    boost::asio::awaitable<void> start_jobs(std::vector<std::shared_ptr<job_control>> ctrls);
    boost::asio::awaitable<void> run_job(std::shared_ptr<job_control> ctrl, core::operation op);
    void record(settled s);
    boost::asio::awaitable<void> write_outcomes();
    boost::asio::awaitable<void> record_outcomes(std::vector<settled> batch);
    void count_outcome(const settled& s);
    boost::asio::awaitable<outcome> run_attempt(std::shared_ptr<job_control> ctrl,
                                                core::operation& op, attempt_context& a);
    core::lifecycle::change settle(const outcome& out, const core::operation& op) const;

    boost::asio::io_context& io_;
    store::store& db_;
    const kind_registry& kinds_;
    scheduler_settings settings_;
    boost::asio::strand<boost::asio::io_context::executor_type> strand_;
    boost::asio::steady_timer delay_timer_;
    std::map<std::string, std::set<entry>, std::less<>> ready_;
    std::multimap<core::millis, std::string> delayed_;
    std::unordered_map<std::string, queued_info> index_;
    std::unordered_map<std::string, std::shared_ptr<job_control>> running_;
    std::map<std::string, unsigned, std::less<>> running_by_kind_;
    handoff<core::queued> incoming_;    ///< enqueued, not yet seen by the strand
    handoff<core::operation> adopted_;  ///< started under a reservation, not yet seen
    // Slots of the global limit not taken by running jobs or reservations; taken on any thread.
    std::atomic<int> free_slots_;
    // Set by pump(): no queued operation is left that a free slot could start.
    std::atomic<bool> queue_idle_{false};
    handoff<settled> settled_;          ///< outcomes not yet handed to the store
    std::uint64_t start_failures_ = 0;  ///< claims in a row whose write failed (on the strand)
    // Outcomes whose write failed wait on these timers (on the strand) before the next try;
    // when a shutdown's grace has passed they are given up.
    std::set<boost::asio::steady_timer*> outcome_timers_;
    bool outcomes_abandoned_ = false;
    bool started_ = false;
    bool stopping_ = false;
    std::function<void()> on_drained_;
    scheduler_stats stats_;
};

}  // namespace buzzer::jobs
