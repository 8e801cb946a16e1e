// The operation lifecycle in one place: every state change is a pure function of an operation
// and what happened to it, giving the operation after the change and the events to store with
// it. No I/O: the store writes what this returns, the scheduler and the API decide when.
//
//   submitted ──▶ pending ──started──▶ running ──succeeded──▶ succeeded
//                  ▲   │                 │ │ ├──failed/timed_out, attempts left──▶ pending
//                  │   │                 │ │ ├──failed/timed_out, none left──────▶ failed
//                  │   └──canceled──┐    │ │ ├──abandoned (at start)──▶ pending or failed
//                  │                ▼    │ │ └──canceled (its job stopped)──▶ canceled
//                  └──handed_back (shutdown, attempt not spent)
#pragma once

#include <string>
#include <variant>
#include <vector>

#include "core/event.hpp"
#include "core/operation.hpp"

namespace buzzer::core::lifecycle {

/// A new operation is accepted: pending, and with `start` its first attempt begins in the same
/// commit (running).
struct submitted {
    millis now = 0;
    bool start = false;
};

/// The next attempt of a pending operation begins.
struct started {
    millis now = 0;
};

/// The running attempt reports progress (percent is clamped to 0..100).
struct progressed {
    int percent = 0;
    std::string message{};
};

/// The running attempt returned its result.
struct succeeded {
    millis now = 0;
};

/// The running attempt failed. It is tried again after `retry_delay_ms` when `retryable` and
/// attempts remain; `type` is the problem type (empty: /problems/job-failed).
struct failed {
    millis now = 0;
    std::string type{};
    std::string detail{};
    bool retryable = true;
    millis retry_delay_ms = 0;
};

/// The running attempt did not end within the operation's timeout_s; retried as a failure.
struct timed_out {
    millis now = 0;
    millis retry_delay_ms = 0;
};

/// A cancel of an active operation is accepted; a running one's job is to stop, and if the
/// server stops first, the operation is canceled at its next start.
struct cancel_requested {};

/// The operation is canceled: a pending one at once, a running one once its job has stopped.
struct canceled {
    millis now = 0;
};

/// At start: the server stopped while the attempt ran. The attempt is spent; the operation
/// runs again at once while attempts remain, else it fails.
struct abandoned {
    millis now = 0;
};

/// At shutdown: the attempt stopped cleanly and is handed back, not spent.
struct handed_back {};

/// What can happen to an operation.
using change = std::variant<submitted, started, progressed, succeeded, failed, timed_out,
                            cancel_requested, canceled, abandoned, handed_back>;

/// Why a change does not apply to the operation as it is.
enum class refusal {
    none,         ///< it applies
    not_new,      ///< `submitted` needs a pending operation that never ran
    not_pending,  ///< `started` needs a pending operation
    not_running,  ///< the attempt's changes need a running operation
    finished,     ///< the operation has ended: nothing changes it any more
};

/// `"none"`, `"not-new"`, ...
std::string_view to_string(refusal r);

/// The outcome of a change.
struct step {
    operation op;               ///< after the change (unchanged when refused)
    std::vector<event> events;  ///< to store with it, in this order (their seq is 0)
    refusal refused = refusal::none;

    /// Whether the change applied.
    explicit operator bool() const { return refused == refusal::none; }
};

/// Applies `c` to `op`.
step apply(operation op, const change& c);

/// The problem of an attempt that failed (`type` empty: /problems/job-failed).
std::string failure_problem(std::string_view type, std::string_view detail, std::string_view id);

}  // namespace buzzer::core::lifecycle
