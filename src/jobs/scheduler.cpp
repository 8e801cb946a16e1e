#include "jobs/scheduler.hpp"

#include <algorithm>
#include <bit>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/defer.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/experimental/channel.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>
#include <climits>

#include "core/json_text.hpp"
#include "core/log.hpp"
#include "core/run_on.hpp"
#include "jobs/backoff.hpp"
#include "jobs/executors.hpp"

namespace buzzer::jobs {
namespace asio = boost::asio;
namespace json = boost::json;
using namespace asio::experimental::awaitable_operators;
constexpr auto tuple_awaitable = asio::as_tuple(asio::use_awaitable);

namespace {

std::chrono::steady_clock::duration seconds(double s) {
    return std::chrono::duration_cast<std::chrono::steady_clock::duration>(
        std::chrono::duration<double>(s));
}

// Adds `item` to `list`. The first item after a take schedules `take` on `strand`, once the
// caller's thread has run the handlers queued with this one: the items they add go with it,
// with one wake-up of the strand's thread.
template <class T, class Strand, class Take>
void hand_over(handoff<T>& list, T item, const asio::any_io_executor& caller, const Strand& strand,
               Take take) {
    if (list.push(std::move(item)))
        asio::defer(caller, [strand, take] { asio::post(strand, take); });
}

}  // namespace

// Why a running job is being stopped; set on the job's strand.
enum class stop_reason { none, cancel, shutdown };

struct scheduler::job_control {
    job_control(std::string id, std::int64_t row, std::string kind, asio::io_context& io)
        : id(std::move(id)),
          row(row),
          kind(std::move(kind)),
          strand(asio::make_strand(io)),
          wake(strand) {
        wake.expires_at(std::chrono::steady_clock::time_point::max());
    }
    std::string id;
    std::int64_t row;  ///< the operation's row in the store
    std::string kind;
    int priority = 0;  ///< as queued (for a claim that is put back)
    asio::strand<asio::io_context::executor_type> strand;
    asio::steady_timer wake;           ///< fires at the attempt's deadline, or at once when stopped
    asio::cancellation_signal cancel;  ///< bound to the job's coroutine; the timer emits it
    stop_reason reason = stop_reason::none;
    bool cancel_asked = false;  ///< on the scheduler's strand: a cancel request came

    void stop(stop_reason r) {
        if (reason == stop_reason::none) reason = r;
        wake.expires_at(std::chrono::steady_clock::time_point::min());
    }
};

// The completion handler of a job's coroutine: logs its failure, naming the job (the text is
// built only then).
auto scheduler::job_failures(std::shared_ptr<job_control> ctrl) {
    return [ctrl = std::move(ctrl)](const std::exception_ptr& e) {
        if (e) core::log_failure(e, "job " + ctrl->id + ": ");
    };
}

void scheduler::spawn_job(const std::shared_ptr<job_control>& ctrl, core::operation op) {
    stats_.attempts.fetch_add(1, std::memory_order_relaxed);
    auto& signal = ctrl->cancel;
    asio::co_spawn(ctrl->strand, run_job(ctrl, std::move(op)),
                   asio::bind_cancellation_slot(signal.slot(), job_failures(ctrl)));
}

struct scheduler::outcome {
    enum kind_t { success, failure, timeout, cancel, shutdown } kind = failure;
    std::string body;        ///< result bytes
    std::string media_type;  ///< of the result; empty: application/json
    std::string type;        ///< of the failure's problem; empty: /problems/job-failed
    std::string detail;
    bool retryable = true;
};

// One attempt as the kind's function sees it.
class scheduler::attempt_context final : public job {
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
        if (!failure) co_return;
        try {
            std::rethrow_exception(failure);
        } catch (const std::exception& e) {
            // A report the store cannot take is dropped, not the attempt: the job goes on, and
            // its outcome is written when the store takes writes again.
            if (!std::exchange(progress_lost_, true))
                core::log(core::level::warn, "job " + op_.id + ": progress not recorded (" +
                                                 e.what() + "); later reports may be lost too");
        } catch (...) {
        }
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

scheduler::scheduler(asio::io_context& io, store::store& db, const kind_registry& kinds,
                     scheduler_settings settings)
    : io_(io),
      db_(db),
      kinds_(kinds),
      settings_(std::move(settings)),
      strand_(asio::make_strand(io)),
      delay_timer_(strand_),
      free_slots_(static_cast<int>(std::min<unsigned>(settings_.max_running, INT_MAX))) {}

scheduler::~scheduler() = default;

void scheduler::load(const std::vector<core::queued>& pending) {
    for (const auto& q : pending) add(q);
}

void scheduler::start() {
    asio::post(strand_, [this] {
        started_ = true;
        pump();
    });
}

void scheduler::enqueue(core::queued q, const asio::any_io_executor& caller) {
    // The submissions resumed by the same group commit reach the strand together.
    hand_over(incoming_, std::move(q), caller, strand_, [this] { take_incoming(); });
}

void scheduler::take_incoming() {
    for (auto& q : incoming_.take()) add(std::move(q));
    pump();
}

bool scheduler::take_slot() {
    int n = free_slots_.load(std::memory_order_relaxed);
    while (n > 0 && !free_slots_.compare_exchange_weak(n, n - 1, std::memory_order_acq_rel)) {
    }
    return n > 0;
}

scheduler::place scheduler::reserve(std::string_view kind) {
    if (!queue_idle_.load(std::memory_order_acquire)) return {};
    const kind_def* k = kinds_.find(kind);
    if (!k || k->defaults.concurrency || !take_slot()) return {};
    return place(this);
}

void scheduler::release() {
    free_slots_.fetch_add(1, std::memory_order_acq_rel);
    asio::post(strand_, [this] { pump(); });
}

void scheduler::adopt(place p, core::operation op, const asio::any_io_executor& caller) {
    p.owner_ = nullptr;  // the slot goes with the job, and comes back when it has finished
    hand_over(adopted_, std::move(op), caller, strand_, [this] { take_adopted(); });
}

void scheduler::take_adopted() {
    for (auto& op : adopted_.take()) {
        auto ctrl = track(op.id, op.row, op.kind);
        // Stored as running after shutdown began: handed back to pending at once.
        if (stopping_) ctrl->stop(stop_reason::shutdown);
        spawn_job(ctrl, std::move(op));
    }
}

std::shared_ptr<scheduler::job_control> scheduler::track(std::string id, std::int64_t row,
                                                         std::string kind) {
    auto ctrl = std::make_shared<job_control>(std::move(id), row, std::move(kind), io_);
    running_.emplace(ctrl->id, ctrl);
    ++running_by_kind_[ctrl->kind];
    stats_.running.store(static_cast<std::int64_t>(running_.size()));
    return ctrl;
}

void scheduler::add(core::queued q) {
    if (index_.count(q.id) || running_.count(q.id)) return;
    entry e{q.priority, q.order, q.id};
    bool delayed = q.run_after > core::now_ms();
    index_.emplace(q.id, queued_info{q.kind, e, q.run_after, delayed});
    stats_.pending.store(static_cast<std::int64_t>(index_.size()));
    if (delayed) {
        delayed_.emplace(q.run_after, q.id);
        arm_delay_timer();
    } else {
        ready_[q.kind].insert(e);
    }
}

void scheduler::arm_delay_timer() {
    if (delayed_.empty()) return;
    auto wait_ms = std::max<core::millis>(delayed_.begin()->first - core::now_ms(), 0);
    auto due = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
    if (delay_timer_.expiry() <= due && delay_timer_.expiry() > std::chrono::steady_clock::now())
        return;  // already armed for an earlier moment
    delay_timer_.expires_at(due);
    delay_timer_.async_wait(asio::bind_executor(strand_, [this](boost::system::error_code ec) {
        if (ec == asio::error::operation_aborted) return;
        release_due();
    }));
}

void scheduler::release_due() {
    auto now = core::now_ms();
    while (!delayed_.empty() && delayed_.begin()->first <= now) {
        auto id = delayed_.begin()->second;
        delayed_.erase(delayed_.begin());
        auto it = index_.find(id);
        if (it == index_.end()) continue;
        it->second.delayed = false;
        ready_[it->second.kind].insert(it->second.e);
    }
    arm_delay_timer();
    pump();
}

void scheduler::pump() {
    if (!started_ || stopping_) {
        queue_idle_.store(false, std::memory_order_release);
        return;
    }
    std::vector<std::shared_ptr<job_control>> claimed;
    bool waiting = false;  // a queued operation that a free slot could start
    for (;;) {
        // The best head among kinds that have room: priority, then age.
        std::set<entry>* best = nullptr;
        std::string_view best_kind;
        for (auto& [kind, queue] : ready_) {
            if (queue.empty()) continue;
            const auto* k = kinds_.find(kind);
            unsigned limit = k ? k->defaults.concurrency : 0;
            auto r = running_by_kind_.find(kind);
            if (limit && r != running_by_kind_.end() && r->second >= limit) continue;
            if (!best || *queue.begin() < *best->begin()) {
                best = &queue;
                best_kind = kind;
            }
        }
        if (!best) break;
        if (!take_slot()) {
            waiting = true;
            break;
        }
        entry e = *best->begin();
        best->erase(best->begin());
        std::string kind(best_kind);
        index_.erase(e.id);
        stats_.pending.store(static_cast<std::int64_t>(index_.size()));
        claimed.push_back(track(std::move(e.id), e.order, std::move(kind)));
        claimed.back()->priority = e.priority;
    }
    queue_idle_.store(!waiting, std::memory_order_release);
    if (!claimed.empty())
        asio::co_spawn(strand_, start_jobs(std::move(claimed)),
                       core::log_failures("starting jobs: "));
}

asio::awaitable<void> scheduler::start_jobs(std::vector<std::shared_ptr<job_control>> ctrls) {
    // One write per attempt (one failing leaves the others alone), all in one round trip.
    std::vector<store::claim> claims;
    claims.reserve(ctrls.size());
    for (const auto& ctrl : ctrls) claims.push_back({ctrl->id, ctrl->row});
    auto started = co_await db_.start_attempts(std::move(claims), core::now_ms());
    for (std::size_t i = 0; i < ctrls.size(); ++i) {
        auto& ctrl = ctrls[i];
        if (const auto& error = started[i].error) {
            // Still pending in the store: it is queued again, to be claimed a moment later
            // (the store may be full or failing for a while).
            // Logged at the 1st, 2nd, 4th, 8th... failure in a row: an outage does not flood
            // the log.
            if (std::has_single_bit(++start_failures_))
                core::log_failure(error, "job " + ctrl->id + ": cannot start (failure " +
                                             std::to_string(start_failures_) +
                                             " in a row), retrying in 1 s: ");
            finished(ctrl, core::queued{ctrl->id, ctrl->kind, ctrl->priority, core::now_ms() + 1000,
                                        ctrl->row});
            continue;
        }
        start_failures_ = 0;
        if (!started[i].op) {
            finished(ctrl, std::nullopt);
            continue;
        }
        spawn_job(ctrl, std::move(*started[i].op));
    }
}

void scheduler::finished(const std::shared_ptr<job_control>& ctrl,
                         std::optional<core::queued> again) {
    asio::post(strand_, [this, ctrl, again = std::move(again)]() mutable {
        running_.erase(ctrl->id);
        free_slots_.fetch_add(1, std::memory_order_acq_rel);
        if (auto it = running_by_kind_.find(ctrl->kind); it != running_by_kind_.end() && it->second)
            --it->second;
        stats_.running.store(static_cast<std::int64_t>(running_.size()));
        if (again && !stopping_) add(std::move(*again));
        if (stopping_ && running_.empty() && on_drained_) {
            auto done = std::move(on_drained_);
            on_drained_ = nullptr;
            done();
        }
        pump();
    });
}

asio::awaitable<scheduler::cancel_state> scheduler::cancel(std::string id) {
    // Named: g++ 12 destroys capturing lambda temporaries of a co_await expression twice.
    auto on_strand = [this, id] {
        if (auto r = running_.find(id); r != running_.end()) {
            auto ctrl = r->second;
            if (std::exchange(ctrl->cancel_asked, true)) return cancel_state::already_cancelling;
            asio::post(ctrl->strand, [ctrl] { ctrl->stop(stop_reason::cancel); });
            return cancel_state::cancelling;
        }
        if (auto q = index_.find(id); q != index_.end()) {
            auto& info = q->second;
            if (info.delayed) {
                for (auto it = delayed_.lower_bound(info.run_after);
                     it != delayed_.end() && it->first == info.run_after; ++it) {
                    if (it->second == id) {
                        delayed_.erase(it);
                        break;
                    }
                }
            } else {
                ready_[info.kind].erase(info.e);
            }
            index_.erase(q);
            stats_.pending.store(static_cast<std::int64_t>(index_.size()));
        }
        return cancel_state::not_active;
    };
    auto state = co_await core::run_on(strand_, std::move(on_strand));
    co_return state;
}

asio::awaitable<void> scheduler::shutdown(std::chrono::steady_clock::time_point deadline) {
    using drained_channel = asio::experimental::channel<void(boost::system::error_code)>;
    auto ex = co_await asio::this_coro::executor;
    auto drained = std::make_shared<drained_channel>(ex, 1);
    auto stop_all = [this, drained] {
        stopping_ = true;
        queue_idle_.store(false, std::memory_order_release);
        delay_timer_.cancel();
        for (auto& [id, ctrl] : running_) {
            asio::post(ctrl->strand, [c = ctrl] { c->stop(stop_reason::shutdown); });
        }
        if (running_.empty()) return true;
        on_drained_ = [drained] { drained->try_send(boost::system::error_code{}); };
        return false;
    };
    bool idle = co_await core::run_on(strand_, std::move(stop_all));
    if (idle) co_return;
    // Jobs stop by themselves until shortly before the deadline; then the commands still
    // running (a command's own SIGKILL may be further off) are killed, so that the shutdown
    // ends within its grace.
    using duration = std::chrono::steady_clock::duration;
    const auto margin = std::clamp<duration>((deadline - std::chrono::steady_clock::now()) / 4,
                                             duration::zero(), std::chrono::milliseconds(250));
    asio::steady_timer grace(ex, deadline - margin);
    auto r =
        co_await (drained->async_receive(tuple_awaitable) || grace.async_wait(tuple_awaitable));
    if (r.index() == 0) co_return;
    if (int n = kill_running_commands())
        core::log(core::level::warn, "shutdown: killed " + std::to_string(n) +
                                         " commands still running at the end of the grace period");
    grace.expires_at(deadline);
    r = co_await (drained->async_receive(tuple_awaitable) || grace.async_wait(tuple_awaitable));
    if (r.index() == 0) co_return;
    core::log(core::level::warn, "shutdown: jobs still running after the grace period");
    // Outcomes that the store would not take are left: their operations are still running in
    // the store, and run again at the next start.
    auto abandon = [this] {
        outcomes_abandoned_ = true;
        for (auto* t : outcome_timers_) t->cancel();
    };
    co_await core::run_on(strand_, std::move(abandon));
}

asio::awaitable<scheduler::outcome> scheduler::run_attempt(std::shared_ptr<job_control> ctrl,
                                                           core::operation& op,
                                                           attempt_context& a) {
    outcome out;
    if (ctrl->reason != stop_reason::none) {
        out.kind = ctrl->reason == stop_reason::cancel ? outcome::cancel : outcome::shutdown;
        co_return out;
    }
    const kind_def* k = kinds_.find(op.kind);
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

// What an attempt's outcome is to the lifecycle. Decided outside the store's writer thread,
// which then only writes the row and the events.
core::lifecycle::change scheduler::settle(const outcome& out, const core::operation& op) const {
    namespace lifecycle = core::lifecycle;
    const auto now = core::now_ms();
    auto retry_delay = [&] {
        const kind_def* k = kinds_.find(op.kind);
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

asio::awaitable<void> scheduler::run_job(std::shared_ptr<job_control> ctrl, core::operation op) {
    attempt_context a(db_, op);
    outcome out = co_await run_attempt(ctrl, op, a);
    // A cancel that arrived while the body was finishing still wins over its result.
    if (ctrl->reason == stop_reason::cancel && out.kind != outcome::cancel)
        out.kind = outcome::cancel;

    settled s;
    auto change = settle(out, op);
    auto step = core::lifecycle::apply(std::move(op), change);
    if (out.kind == outcome::success) {
        if (out.media_type.empty()) out.media_type = "application/json";
        s.result = core::result_body{std::move(out.body), std::move(out.media_type)};
    }
    s.failed_attempt = out.kind == outcome::failure || out.kind == outcome::timeout;
    s.op = std::move(step.op);
    s.events = std::move(step.events);
    s.ctrl = std::move(ctrl);
    record(std::move(s));
}

void scheduler::record(settled s) {
    // The outcomes of the jobs that end while this thread runs its queued handlers are written
    // together.
    hand_over(settled_, std::move(s), io_.get_executor(), strand_, [this] {
        asio::co_spawn(strand_, write_outcomes(), core::log_failures("recording outcomes: "));
    });
}

asio::awaitable<void> scheduler::write_outcomes() { co_await record_outcomes(settled_.take()); }

// An outcome whose write fails is written again, after a pause that grows from 100 ms to 1 s,
// until the store takes it: its operation is running in the store until then, so its job
// still counts as running (a cancel is answered, a shutdown waits for it).
asio::awaitable<void> scheduler::record_outcomes(std::vector<settled> batch) {
    auto pause = std::chrono::milliseconds(100);
    for (int round = 1;; ++round) {
        std::vector<store::change> changes;
        changes.reserve(batch.size());
        for (const auto& s : batch)
            changes.push_back({s.op, s.events, s.result ? &*s.result : nullptr});
        auto written = co_await db_.record(changes);
        std::vector<settled> failed;
        for (std::size_t i = 0; i < batch.size(); ++i) {
            auto& s = batch[i];
            if (written[i].error) {
                if (round == 1)
                    core::log_failure(written[i].error,
                                      "job " + s.op.id + ": cannot record the outcome, retrying: ");
                failed.push_back(std::move(s));
                continue;
            }
            if (!written[i].written) {
                // The store no longer has it running: nothing of this attempt is to be kept.
                core::log(
                    core::level::warn,
                    "job " + s.op.id + ": outcome dropped, the operation is no longer running");
                finished(s.ctrl, std::nullopt);
                continue;
            }
            if (round > 1)
                core::log(core::level::info, "job " + s.op.id + ": outcome recorded after " +
                                                 std::to_string(round) + " tries");
            count_outcome(s);
            std::optional<core::queued> again;
            if (s.op.state == core::status::pending) again = core::queue_entry(s.op);
            finished(s.ctrl, std::move(again));
        }
        if (failed.empty()) co_return;
        batch = std::move(failed);
        asio::steady_timer wait(strand_, pause);
        if (!outcomes_abandoned_) {
            outcome_timers_.insert(&wait);
            co_await wait.async_wait(tuple_awaitable);
            outcome_timers_.erase(&wait);
        }
        if (outcomes_abandoned_) {
            for (const auto& s : batch)
                core::log(core::level::warn,
                          "job " + s.op.id + ": outcome not recorded before the shutdown");
            co_return;
        }
        pause = std::min<std::chrono::milliseconds>(pause * 2, std::chrono::seconds(1));
    }
}

void scheduler::count_outcome(const settled& s) {
    switch (s.op.state) {
        case core::status::succeeded:
            stats_.succeeded.fetch_add(1);
            break;
        case core::status::failed:
            stats_.failed.fetch_add(1);
            break;
        case core::status::canceled:
            stats_.canceled.fetch_add(1);
            break;
        case core::status::pending:
            if (s.failed_attempt) stats_.retried.fetch_add(1);
            break;
        default:
            break;
    }
}

}  // namespace buzzer::jobs
