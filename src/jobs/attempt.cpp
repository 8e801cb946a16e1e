// The attempt runner: the kind's function against the timeout and a stop.
#include "jobs/attempt.hpp"

#include <algorithm>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>
#include <optional>
#include <utility>

#include "core/json_text.hpp"
#include "core/log.hpp"
#include "jobs/backoff.hpp"

namespace buzzer::jobs {
namespace asio = boost::asio;
namespace json = boost::json;

namespace {

std::chrono::steady_clock::duration seconds(double s) {
    return std::chrono::duration_cast<std::chrono::steady_clock::duration>(
        std::chrono::duration<double>(s));
}

// One attempt as the kind's function sees it.
class attempt_context final : public job {
  public:
    attempt_context(store::store& db, core::operation& op) : db_(db), op_(op) {}

    const std::string& id() const override { return op_.id; }
    const std::string& kind() const override { return op_.kind; }
    int attempt() const override { return op_.attempt; }
    // Parsed on first use: kinds that pass the input on as text never parse it.
    const json::value& input() const override {
        if (!input_) {
            boost::system::error_code ec;
            input_.emplace(json::parse(op_.input, ec, {}, core::json_options()));
            if (ec) *input_ = nullptr;
        }
        return *input_;
    }
    std::string_view input_text() const override { return op_.input; }

    asio::awaitable<void> progress(int percent, std::string message) override {
        // The operation goes through the lifecycle and back without a copy of its input: a
        // string moved out and back keeps its buffer, so input_text() views stay valid.
        auto step = core::lifecycle::apply(
            std::move(op_), core::lifecycle::progressed{percent, std::move(message)});
        op_ = std::move(step.op);
        if (!step) co_return;
        // Every report is an event, and the job waits for it to be durable: one that reports
        // faster than the store commits is slowed down to its pace, none is dropped.
        const store::change report{op_, step.events};
        std::exception_ptr failure;
        try {
            auto written = co_await db_.record({&report, 1});
            failure = written.front().error;
        } catch (...) {
            failure = std::current_exception();
        }
        // A report the store cannot take is dropped, not the attempt: the job goes on, and its
        // outcome is written when the store takes writes again.
        if (failure && !std::exchange(progress_lost_, true))
            core::log_failure(
                failure,
                "job " + op_.id + ": progress not recorded (later reports may be lost too): ",
                core::level::warn);
    }

    void set_result(std::string body, std::string media_type) override {
        raw_result_ = std::move(body);
        media_type_ = std::move(media_type);
    }

    std::optional<std::string> raw_result_;
    std::string media_type_;

  private:
    store::store& db_;
    core::operation& op_;
    mutable std::optional<json::value> input_;
    bool progress_lost_ = false;  ///< a report of this attempt could not be written
};

// The attempt itself; `op` is the attempt's operation, which `a` reports progress on.
asio::awaitable<outcome> race_attempt(std::shared_ptr<job_control> ctrl, const kind_registry& kinds,
                                      core::operation& op, attempt_context& a) {
    outcome out;
    if (ctrl->reason != stop_reason::none) {
        out.kind = ctrl->reason == stop_reason::cancel ? outcome::cancel : outcome::shutdown;
        co_return out;
    }
    const kind_def* k = kinds.find(op.kind);
    if (!k) {
        out.type = "/problems/unknown-kind";
        out.detail = "this server does not run the kind " + op.kind;
        out.retryable = false;
        co_return out;
    }
    // The body never throws: its failure is an outcome, so the race below ends with it.
    auto body = [](const kind_def* k, attempt_context& a) -> asio::awaitable<outcome> {
        outcome o;
        try {
            json::value v = co_await k->run(a);
            o.kind = outcome::success;
            if (a.raw_result_) {
                o.body = std::move(*a.raw_result_);
                o.media_type = a.media_type_;
            } else {
                o.body = core::to_json(v);
            }
        } catch (const job_error& e) {
            o.type = e.type();
            o.detail = e.what();
            o.retryable = e.retryable();
        } catch (const std::exception& e) {
            o.detail = e.what();
        }
        co_return o;
    };
    // One timer for both ends: it expires at the attempt's deadline, or at once when the job
    // is stopped (which also sets the reason). Whichever comes first, the body's end or the
    // timer's, decides; the timer cancels what the body waits for (through the signal bound
    // to this coroutine), and the body is awaited to its end either way.
    struct race {
        bool body_done = false;
        bool timer_first = false;
    };
    auto rc = std::make_shared<race>();
    ctrl->wake.expires_after(seconds(op.timeout_s));
    ctrl->wake.async_wait([rc, c = ctrl](boost::system::error_code) {
        if (rc->body_done) return;
        rc->timer_first = true;
        c->cancel.emit(asio::cancellation_type::all);
    });
    outcome result = co_await body(k, a);
    rc->body_done = true;
    if (!rc->timer_first) {
        ctrl->wake.cancel();
        co_return result;
    }
    if (ctrl->reason == stop_reason::none) {
        out.kind = outcome::timeout;
        co_return out;
    }
    out.kind = ctrl->reason == stop_reason::shutdown ? outcome::shutdown : outcome::cancel;
    co_return out;
}

}  // namespace

job_control::job_control(std::string id, std::int64_t row, std::string kind, asio::io_context& io)
    : id(std::move(id)),
      row(row),
      kind(std::move(kind)),
      strand(asio::make_strand(io)),
      wake(strand) {
    wake.expires_at(std::chrono::steady_clock::time_point::max());
}

void job_control::stop(stop_reason r) {
    if (reason == stop_reason::none) reason = r;
    wake.expires_at(std::chrono::steady_clock::time_point::min());
}

asio::awaitable<ended_attempt> run_attempt(std::shared_ptr<job_control> ctrl,
                                           const kind_registry& kinds, store::store& db,
                                           core::operation op) {
    ended_attempt ended;
    {
        attempt_context a(db, op);
        ended.out = co_await race_attempt(ctrl, kinds, op, a);
    }
    // A cancel that arrived while the body was finishing still wins over its result.
    if (ctrl->reason == stop_reason::cancel && ended.out.kind != outcome::cancel)
        ended.out.kind = outcome::cancel;
    ended.op = std::move(op);
    co_return ended;
}

core::lifecycle::change settle(const outcome& out, const core::operation& op,
                               const kind_registry& kinds, core::millis now) {
    namespace lifecycle = core::lifecycle;
    auto retry_delay = [&] {
        const kind_def* k = kinds.find(op.kind);
        kind_options d = k ? k->defaults : kind_options{};
        return backoff_delay_ms(op.attempt, d.backoff_base_s, d.backoff_max_s);
    };
    switch (out.kind) {
        case outcome::success:
            return lifecycle::succeeded{now};
        case outcome::timeout:
            return lifecycle::timed_out{now, retry_delay()};
        case outcome::failure:
            return lifecycle::failed{now, out.type, out.detail, out.retryable, retry_delay()};
        case outcome::cancel:
            return lifecycle::canceled{now};
        case outcome::shutdown:
            break;
    }
    return lifecycle::handed_back{};
}

}  // namespace buzzer::jobs
