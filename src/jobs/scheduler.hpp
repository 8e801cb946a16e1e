// The scheduler: claims pending operations within the global and per-kind concurrency limits,
// runs each attempt (jobs/attempt.hpp) and hands its outcome to the outcome writer. Its state
// lives on its own strand. On a store of one node it claims from its own ready queue, fed
// after each commit; on a store that many nodes share (store::cluster) it claims from the
// store when told that work appeared, when a delayed retry is due and every poll interval,
// and it heart-beats, takes over dead nodes' operations when it holds the lease, and stops
// jobs whose cancel another node accepted.
#pragma once

#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "jobs/attempt.hpp"
#include "jobs/handoff.hpp"
#include "jobs/kinds.hpp"
#include "jobs/outcome_writer.hpp"
#include "jobs/ready_queue.hpp"
#include "store/store.hpp"

namespace buzzer::jobs {

/// Settings of the scheduler.
struct scheduler_settings {
    unsigned max_running = 256;
    /// Many nodes: a node silent for this long is taken for dead (its operations are taken
    /// over), and the lease of the maintenance lasts this long.
    std::chrono::milliseconds node_timeout{15000};
    /// Many nodes: how often the node heart-beats and looks at the shared queue without being
    /// told to.
    std::chrono::milliseconds poll_interval{1000};
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

    /// A new operation of a tenant, counted among the tenant's pending ones from the moment it
    /// is admitted (before its commit) so that concurrent submissions cannot pass the tenant's
    /// quota together; uncounted when dropped, unless enqueue() spends it.
    class pending_claim {
      public:
        pending_claim() = default;
        pending_claim(pending_claim&& o) noexcept
            : owner_(std::exchange(o.owner_, nullptr)), tenant_(std::move(o.tenant_)) {}
        pending_claim& operator=(pending_claim&&) = delete;
        ~pending_claim() {
            if (owner_) owner_->count_pending(tenant_, -1);
        }

      private:
        friend class scheduler;
        pending_claim(scheduler* owner, std::string tenant)
            : owner_(owner), tenant_(std::move(tenant)) {}
        scheduler* owner_ = nullptr;
        std::string tenant_;
    };

    /// Admits a new operation of `tenant`, callable from any thread: nothing when the tenant
    /// already has `limit` pending operations (admitted ones included).
    std::optional<pending_claim> admit(std::string tenant, std::optional<std::uint64_t> limit);

    /// Queues a newly committed pending operation admitted as `claim`; callable from any
    /// thread. `caller` is the executor the call runs on: the operations queued by the
    /// handlers it runs in a row reach the scheduler together, with one wake-up of the
    /// scheduler's thread.
    void enqueue(core::queued q, pending_claim claim, const boost::asio::any_io_executor& caller);

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
    void count_pending(const std::string& tenant, std::int64_t delta);
    // Pending operations per tenant (admitted ones included), read by submissions on every I/O
    // thread. With many nodes: those admitted here and not yet committed, beside the count of
    // every node's (read every poll interval) and those committed here since the count
    // before last began (which it may have missed).
    mutable std::mutex tenants_mutex_;
    std::map<std::string, std::int64_t, std::less<>> pending_by_tenant_;
    std::map<std::string, std::int64_t, std::less<>> shared_pending_;
    std::map<std::string, std::int64_t, std::less<>> committed_recently_;
    std::map<std::string, std::int64_t, std::less<>> committed_before_count_;
    // Many nodes.
    void want_work();
    void claim_shared();
    boost::asio::awaitable<void> claim_from_store(std::size_t slots);
    void arm_due_timer(core::millis due);
    void cancel_running(const std::string& id);
    boost::asio::awaitable<void> keep_in_touch();
    boost::asio::awaitable<void> count_shared_pending();
    void spawn_job(const std::shared_ptr<job_control>& ctrl, core::operation op);
    // Queues `q`; `counted` when it was counted as pending when admitted.
    void add(core::queued q, bool counted = false);
    void take_incoming();
    void take_adopted();
    bool take_slot();
    void release();
    std::shared_ptr<job_control> track(std::string id, std::int64_t row, std::string kind);
    void pump();
    void arm_delay_timer();
    void release_due();
    void finished(const std::shared_ptr<job_control>& ctrl, std::optional<core::queued> again);
    boost::asio::awaitable<void> start_jobs(std::vector<std::shared_ptr<job_control>> ctrls);
    boost::asio::awaitable<void> run_job(std::shared_ptr<job_control> ctrl, core::operation op);
    void recorded(settled s, bool written);
    void count_outcome(const settled& s);

    boost::asio::io_context& io_;
    store::store& db_;
    const kind_registry& kinds_;
    scheduler_settings settings_;
    boost::asio::strand<boost::asio::io_context::executor_type> strand_;
    boost::asio::steady_timer delay_timer_;
    boost::asio::steady_timer beat_timer_;
    store::cluster* cluster_;  ///< the store many nodes share; null on a store of one
    bool wanted_ = false;      ///< many nodes: work may be waiting in the store
    bool claiming_ = false;    ///< many nodes: a claim is on its way
    std::uint64_t claim_failures_ = 0;
    ready_queue queue_;
    std::unordered_map<std::string, std::shared_ptr<job_control>> running_;
    std::map<std::string, unsigned, std::less<>> running_by_kind_;
    handoff<core::queued> incoming_;    ///< enqueued, not yet seen by the strand
    handoff<core::operation> adopted_;  ///< started under a reservation, not yet seen
    // Slots of the global limit not taken by running jobs or reservations; taken on any thread.
    std::atomic<int> free_slots_;
    // Set by pump(): no queued operation is left that a free slot could start.
    std::atomic<bool> queue_idle_{false};
    outcome_writer outcomes_;
    std::uint64_t start_failures_ = 0;  ///< claims in a row whose write failed (on the strand)
    bool started_ = false;
    bool stopping_ = false;
    std::function<void()> on_drained_;
    scheduler_stats stats_;
};

}  // namespace buzzer::jobs
