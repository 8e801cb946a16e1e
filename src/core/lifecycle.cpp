#include "core/lifecycle.hpp"

#include <algorithm>

namespace buzzer::core::lifecycle {
namespace {

// Each change as a function of the operation, which it may change; returns why it does not
// apply, or none. `emit` adds an event carrying the operation's state as it is then.
class transitions {
  public:
    transitions(operation& op, std::vector<event>& events) : op_(op), events_(events) {}

    refusal operator()(const submitted& c) {
        if (op_.state != status::pending || op_.attempt != 0) return refusal::not_new;
        emit("pending");
        if (c.start) {
            begin_attempt(c.now);
            emit("running");
        }
        return refusal::none;
    }

    refusal operator()(const started& c) {
        if (auto r = require(status::pending); r != refusal::none) return r;
        // Clocks read on other threads or nodes can lag the one that stamped the
        // creation by a little: an attempt never starts before its operation exists.
        begin_attempt(std::max(c.now, op_.created_at));
        emit("running");
        return refusal::none;
    }

    refusal operator()(const progressed& c) {
        if (auto r = require(status::running); r != refusal::none) return r;
        const auto percent = std::to_string(std::clamp(c.percent, 0, 100));
        std::string progress = R"({"percent":)" + percent + R"(,"message":)";
        append_json_string(progress, c.message);
        progress += '}';
        std::string data = R"({"id":)";
        append_json_string(data, op_.id);
        data += R"(,"percent":)" + percent + R"(,"message":)";
        append_json_string(data, c.message);
        data += '}';
        op_.progress = std::move(progress);
        events_.push_back(event{0, op_.id, "progress", std::move(data)});
        return refusal::none;
    }

    refusal operator()(const succeeded& c) {
        if (auto r = require(status::running); r != refusal::none) return r;
        op_.state = status::succeeded;
        op_.finished_at = c.now;
        op_.error.reset();
        emit("completed");
        return refusal::none;
    }

    refusal operator()(const failed& c) {
        if (auto r = require(status::running); r != refusal::none) return r;
        fail_attempt(c.now, failure_problem(c.type, c.detail, op_.id), c.retryable,
                     c.retry_delay_ms);
        return refusal::none;
    }

    refusal operator()(const timed_out& c) {
        if (auto r = require(status::running); r != refusal::none) return r;
        fail_attempt(c.now,
                     failure_problem("/problems/timeout",
                                     "the attempt did not finish within timeout_s (" +
                                         number_text(op_.timeout_s) + " s)",
                                     op_.id),
                     true, c.retry_delay_ms);
        return refusal::none;
    }

    refusal operator()(const cancel_requested&) {
        if (is_terminal(op_.state)) return refusal::finished;
        op_.cancel_requested = true;
        return refusal::none;
    }

    refusal operator()(const canceled& c) {
        if (is_terminal(op_.state)) return refusal::finished;
        op_.state = status::canceled;
        op_.finished_at = c.now;
        op_.error = canceled_problem(op_.id);
        emit("canceled");
        return refusal::none;
    }

    refusal operator()(const abandoned& c) {
        if (auto r = require(status::running); r != refusal::none) return r;
        op_.error = operation_problem("/problems/abandoned", "Attempt abandoned", 500,
                                      "the server stopped while the attempt was running", op_.id);
        op_.progress.reset();
        if (op_.attempt < op_.max_attempts) {
            op_.state = status::pending;
            op_.run_after = c.now;
            emit("pending");
        } else {
            op_.state = status::failed;
            op_.finished_at = c.now;
            emit("failed");
        }
        return refusal::none;
    }

    refusal operator()(const handed_back&) {
        if (auto r = require(status::running); r != refusal::none) return r;
        op_.state = status::pending;
        op_.attempt = std::max(op_.attempt - 1, 0);
        if (op_.attempt == 0) op_.started_at.reset();
        op_.progress.reset();
        op_.error.reset();
        op_.run_after = 0;
        emit("pending");
        return refusal::none;
    }

  private:
    refusal require(status s) const {
        if (op_.state == s) return refusal::none;
        if (is_terminal(op_.state)) return refusal::finished;
        return s == status::pending ? refusal::not_pending : refusal::not_running;
    }

    void begin_attempt(millis now) {
        op_.state = status::running;
        ++op_.attempt;
        op_.started_at = now;
        op_.progress.reset();
        op_.error.reset();
    }

    void fail_attempt(millis now, std::string problem, bool retryable, millis retry_delay_ms) {
        op_.error = std::move(problem);
        if (retryable && op_.attempt < op_.max_attempts) {
            op_.state = status::pending;
            op_.progress.reset();
            op_.run_after = now + std::max<millis>(retry_delay_ms, 0);
            emit("pending");
        } else {
            op_.state = status::failed;
            op_.finished_at = now;
            emit("failed");
        }
    }

    void emit(const char* type) { events_.push_back(event{0, op_.id, type, state_text(op_)}); }

    operation& op_;
    std::vector<event>& events_;
};

}  // namespace

std::string_view to_string(refusal r) {
    switch (r) {
        case refusal::none:
            return "none";
        case refusal::not_new:
            return "not-new";
        case refusal::not_pending:
            return "not-pending";
        case refusal::not_running:
            return "not-running";
        case refusal::finished:
            return "finished";
    }
    return "unknown";
}

std::string failure_problem(std::string_view type, std::string_view detail, std::string_view id) {
    // A job may report a timeout of its own (an upstream's): it reads as the server's does.
    const bool timeout = type == "/problems/timeout";
    return operation_problem(type.empty() ? "/problems/job-failed" : type,
                             timeout ? "Attempt timed out" : "Attempt failed", timeout ? 504 : 500,
                             detail, id);
}

step apply(operation op, const change& c) {
    step s;
    s.op = std::move(op);
    s.refused = std::visit(transitions(s.op, s.events), c);
    return s;
}

}  // namespace buzzer::core::lifecycle
