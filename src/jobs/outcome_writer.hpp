// The outcome writer: writes what attempts came to, batched, and again until the store takes
// them. A service of its own on the scheduler's strand, apart from running attempts.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "core/event.hpp"
#include "core/operation.hpp"
#include "jobs/attempt.hpp"
#include "jobs/handoff.hpp"
#include "store/store.hpp"

namespace buzzer::jobs {

/// An attempt's outcome, to be written.
struct settled {
    std::shared_ptr<job_control> ctrl;
    core::operation op;  ///< after the outcome
    std::vector<core::event> events;
    std::optional<core::result_body> result;  ///< of a success
    bool failed_attempt = false;              ///< the attempt failed (or timed out)
    int attempt = 0;                          ///< the attempt that ended
    int tries = 0;                            ///< writes tried so far
};

/// Writes outcomes: those of the attempts that end while their I/O thread runs its queued
/// handlers go to the store together. An outcome whose write fails is written again, after a
/// pause that grows from 100 ms to 1 s, until the store takes it: its operation is running in
/// the store until then, so its job still counts as running (a cancel is answered, a shutdown
/// waits for it).
class outcome_writer {
  public:
    using strand_type = boost::asio::strand<boost::asio::io_context::executor_type>;
    /// Called on `strand` once an outcome is written (`written`), or found stale (the store no
    /// longer had the operation running).
    using done_fn = std::function<void(settled s, bool written)>;

    /// Writes run on `strand`; `io` runs the jobs that hand outcomes over.
    outcome_writer(boost::asio::io_context& io, strand_type strand, store::store& db, done_fn done);

    /// Queues an outcome; callable from the attempt's strand (on `io`'s thread).
    void record(settled s);

    /// Gives up the outcomes that wait for a retry, and any that fail from now on: their
    /// operations stay running in the store and run again at the next start (a shutdown past
    /// its grace). Call on `strand`.
    void abandon();

  private:
    void take_incoming();
    boost::asio::awaitable<void> write(std::vector<settled> batch);
    void arm_retry();

    boost::asio::io_context& io_;
    strand_type strand_;
    store::store& db_;
    done_fn done_;
    handoff<settled> incoming_;   ///< recorded, not yet seen by the strand
    std::vector<settled> retry_;  ///< failed writes waiting for the retry timer
    boost::asio::steady_timer retry_timer_;
    bool retry_armed_ = false;
    std::chrono::milliseconds pause_{100};
    bool abandoned_ = false;
};

}  // namespace buzzer::jobs
