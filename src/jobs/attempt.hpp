// The attempt runner: one attempt of an operation, its kind's function raced against the
// operation's timeout and a stop (cancel, shutdown), its progress reports written as they come;
// and what its outcome is to the lifecycle.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <cstdint>
#include <memory>
#include <string>

#include "core/lifecycle.hpp"
#include "core/operation.hpp"
#include "jobs/kinds.hpp"
#include "store/store.hpp"

namespace buzzer::jobs {

/// Why a running attempt is being stopped.
enum class stop_reason { none, cancel, shutdown };

/// The handle of a running attempt: its strand, the timer that ends it, the signal that cancels
/// its kind's function. Shared by the scheduler (which stops it) and the attempt's coroutine.
struct job_control {
    job_control(std::string id, std::int64_t row, std::string kind, boost::asio::io_context& io);

    std::string id;
    std::int64_t row;  ///< the operation's handle in the store
    std::string kind;
    int priority = 0;    ///< as queued (for a claim that is put back)
    std::string tenant;  ///< as queued (for a claim that is put back)
    boost::asio::strand<boost::asio::io_context::executor_type> strand;
    boost::asio::steady_timer wake;  ///< fires at the attempt's deadline, or at once when stopped
    boost::asio::cancellation_signal cancel;  ///< bound to the job's coroutine; `wake` emits it
    stop_reason reason = stop_reason::none;   ///< on `strand`
    bool cancel_asked = false;                ///< on the scheduler's strand: a cancel request came

    /// Ends the attempt for `r` (the first reason given wins); call on `strand`.
    void stop(stop_reason r);
};

/// How an attempt ended.
struct outcome {
    enum kind_t { success, failure, timeout, cancel, shutdown } kind = failure;
    std::string body;        ///< result bytes
    std::string media_type;  ///< of the result; empty: application/json
    std::string type;        ///< of the failure's problem; empty: /problems/job-failed
    std::string detail;
    bool retryable = true;
};

/// An attempt that has ended: its outcome and the operation as the attempt left it.
struct ended_attempt {
    outcome out;
    core::operation op;
};

/// Runs the attempt of running operation `op` on `ctrl->strand`: its kind's function until it
/// returns, throws, times out (timeout_s) or is stopped; progress reports are written to `db`
/// as they come. Never throws: every end is an outcome. A cancel that comes while the function
/// is finishing still wins over its result.
boost::asio::awaitable<ended_attempt> run_attempt(std::shared_ptr<job_control> ctrl,
                                                  const kind_registry& kinds, store::store& db,
                                                  core::operation op);

/// What `out` is to the lifecycle for `op`: a failure's retry is delayed by the backoff of the
/// operation's kind.
core::lifecycle::change settle(const outcome& out, const core::operation& op,
                               const kind_registry& kinds, core::millis now);

}  // namespace buzzer::jobs
