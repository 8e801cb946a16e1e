#include "jobs/scheduler.hpp"

#include <algorithm>
#include <bit>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/experimental/channel.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <climits>

#include "core/log.hpp"
#include "core/run_on.hpp"
#include "jobs/executors.hpp"

namespace buzzer::jobs {
namespace asio = boost::asio;
using namespace asio::experimental::awaitable_operators;
constexpr auto tuple_awaitable = asio::as_tuple(asio::use_awaitable);

namespace {

// The completion handler of a job's coroutine: logs its failure, naming the job (the text is
// built only then).
auto job_failures(std::shared_ptr<job_control> ctrl) {
    return [ctrl = std::move(ctrl)](const std::exception_ptr& e) {
        if (e) core::log_failure(e, "job " + ctrl->id + ": ");
    };
}

}  // namespace

scheduler::scheduler(asio::io_context& io, store::store& db, const kind_registry& kinds,
                     scheduler_settings settings)
    : io_(io),
      db_(db),
      kinds_(kinds),
      settings_(std::move(settings)),
      strand_(asio::make_strand(io)),
      delay_timer_(strand_),
      beat_timer_(strand_),
      cluster_(db.shared()),
      free_slots_(static_cast<int>(std::min<unsigned>(settings_.max_running, INT_MAX))),
      outcomes_(io, strand_, db,
                [this](settled s, bool written) { recorded(std::move(s), written); }) {}

scheduler::~scheduler() = default;

void scheduler::spawn_job(const std::shared_ptr<job_control>& ctrl, core::operation op) {
    stats_.attempts.fetch_add(1, std::memory_order_relaxed);
    auto& signal = ctrl->cancel;
    asio::co_spawn(ctrl->strand, run_job(ctrl, std::move(op)),
                   asio::bind_cancellation_slot(signal.slot(), job_failures(ctrl)));
}

void scheduler::load(const std::vector<core::queued>& pending) {
    if (!cluster_) {
        for (const auto& q : pending) add(q);
        return;
    }
    // Many nodes: the queue stays in the store; this is every node's count until the next.
    std::lock_guard lock(tenants_mutex_);
    for (const auto& q : pending) ++shared_pending_[q.tenant];
    stats_.pending.store(static_cast<std::int64_t>(pending.size()));
}

void scheduler::start() {
    if (cluster_) {
        cluster_->on_work = [this] { asio::post(strand_, [this] { want_work(); }); };
        cluster_->on_cancel = [this](std::string id) {
            asio::post(strand_, [this, id = std::move(id)] { cancel_running(id); });
        };
    }
    asio::post(strand_, [this] {
        started_ = true;
        if (cluster_) {
            wanted_ = true;
            asio::co_spawn(strand_, keep_in_touch(), core::log_failures("heart-beat: "));
        }
        pump();
    });
}

void scheduler::enqueue(core::queued q, pending_claim claim, const asio::any_io_executor& caller) {
    if (cluster_) {
        // Counted as committed here until a count of every node's has seen it.
        std::lock_guard lock(tenants_mutex_);
        ++committed_recently_[q.tenant];
    } else {
        claim.owner_ = nullptr;  // still counted, now as queued
    }
    // The submissions resumed by the same group commit reach the strand together.
    hand_over(incoming_, std::move(q), caller, strand_, [this] { take_incoming(); });
}

void scheduler::take_incoming() {
    auto incoming = incoming_.take();
    if (cluster_) {
        want_work();
        return;
    }
    for (auto& q : incoming) add(std::move(q), true);
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

std::shared_ptr<job_control> scheduler::track(std::string id, std::int64_t row, std::string kind) {
    auto ctrl = std::make_shared<job_control>(std::move(id), row, std::move(kind), io_);
    running_.emplace(ctrl->id, ctrl);
    ++running_by_kind_[ctrl->kind];
    stats_.running.store(static_cast<std::int64_t>(running_.size()));
    return ctrl;
}

void scheduler::count_pending(const std::string& tenant, std::int64_t delta) {
    std::lock_guard lock(tenants_mutex_);
    auto it = pending_by_tenant_.try_emplace(tenant, 0).first;
    it->second += delta;
    if (it->second <= 0) pending_by_tenant_.erase(it);
}

std::optional<scheduler::pending_claim> scheduler::admit(std::string tenant,
                                                         std::optional<std::uint64_t> limit) {
    std::lock_guard lock(tenants_mutex_);
    auto [it, _] = pending_by_tenant_.try_emplace(tenant, 0);
    std::int64_t elsewhere = 0;  // many nodes: the pending operations the store holds
    for (const auto* counts : {&shared_pending_, &committed_recently_, &committed_before_count_})
        if (auto c = counts->find(tenant); c != counts->end()) elsewhere += c->second;
    if (limit && it->second + elsewhere >= static_cast<std::int64_t>(*limit)) {
        if (it->second <= 0) pending_by_tenant_.erase(it);
        return std::nullopt;
    }
    ++it->second;
    return pending_claim(this, std::move(tenant));
}

void scheduler::add(core::queued q, bool counted) {
    if (running_.count(q.id) || !queue_.add(q, core::now_ms())) {
        if (counted) count_pending(q.tenant, -1);
        return;
    }
    if (!counted) count_pending(q.tenant, 1);
    stats_.pending.store(static_cast<std::int64_t>(queue_.size()));
    arm_delay_timer();
}

void scheduler::arm_delay_timer() {
    auto first = queue_.next_due();
    if (!first) return;
    auto wait_ms = std::max<core::millis>(*first - core::now_ms(), 0);
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
    queue_.release_due(core::now_ms());
    arm_delay_timer();
    pump();
}

void scheduler::pump() {
    if (!started_ || stopping_) {
        queue_idle_.store(false, std::memory_order_release);
        return;
    }
    if (cluster_) {
        claim_shared();
        return;
    }
    // Kinds with a concurrency limit of their own take only what it leaves.
    auto has_room = [this](std::string_view kind) {
        const auto* k = kinds_.find(kind);
        unsigned limit = k ? k->defaults.concurrency : 0;
        if (!limit) return true;
        auto r = running_by_kind_.find(kind);
        return r == running_by_kind_.end() || r->second < limit;
    };
    std::vector<std::shared_ptr<job_control>> claimed;
    bool waiting = false;  // a queued operation that a free slot could start
    while (const auto* next = queue_.peek(has_room)) {
        if (!take_slot()) {
            waiting = true;
            break;
        }
        auto q = queue_.pop(next);
        count_pending(q.tenant, -1);
        claimed.push_back(track(std::move(q.id), q.order, std::move(q.kind)));
        claimed.back()->priority = q.priority;
        claimed.back()->tenant = std::move(q.tenant);
    }
    stats_.pending.store(static_cast<std::int64_t>(queue_.size()));
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
            core::queued again{ctrl->id, ctrl->kind, ctrl->priority, core::now_ms() + 1000,
                               ctrl->row};
            again.tenant = ctrl->tenant;
            finished(ctrl, std::move(again));
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
        if (again && !stopping_) {
            if (!cluster_) {
                add(std::move(*again));
            } else if (again->run_after > core::now_ms()) {
                arm_due_timer(again->run_after);
            } else {
                wanted_ = true;
            }
        }
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
        if (auto removed = queue_.remove(id)) {
            count_pending(removed->tenant, -1);
            stats_.pending.store(static_cast<std::int64_t>(queue_.size()));
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
        beat_timer_.cancel();
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
    auto abandon = [this] { outcomes_.abandon(); };
    co_await core::run_on(strand_, std::move(abandon));
}

asio::awaitable<void> scheduler::run_job(std::shared_ptr<job_control> ctrl, core::operation op) {
    auto ended = co_await run_attempt(ctrl, kinds_, db_, std::move(op));
    auto& out = ended.out;
    const auto change = settle(out, ended.op, kinds_, core::now_ms());
    const int attempt = ended.op.attempt;
    auto step = core::lifecycle::apply(std::move(ended.op), change);
    settled s;
    if (out.kind == outcome::success) {
        if (out.media_type.empty()) out.media_type = "application/json";
        s.result = core::result_body{std::move(out.body), std::move(out.media_type)};
    }
    s.attempt = attempt;
    s.failed_attempt = out.kind == outcome::failure || out.kind == outcome::timeout;
    s.op = std::move(step.op);
    s.events = std::move(step.events);
    s.ctrl = std::move(ctrl);
    outcomes_.record(std::move(s));
}

void scheduler::recorded(settled s, bool written) {
    if (!written) {
        finished(s.ctrl, std::nullopt);
        return;
    }
    count_outcome(s);
    std::optional<core::queued> again;
    if (s.op.state == core::status::pending) again = core::queue_entry(s.op);
    finished(s.ctrl, std::move(again));
}

void scheduler::want_work() {
    wanted_ = true;
    pump();
}

void scheduler::claim_shared() {
    // One claim at a time, for every slot free then (at most a batch's worth).
    constexpr std::size_t max_claim = 256;
    if (claiming_ || !wanted_) {
        queue_idle_.store(!wanted_ && !claiming_, std::memory_order_release);
        return;
    }
    std::size_t slots = 0;
    while (slots < max_claim && take_slot()) ++slots;
    queue_idle_.store(false, std::memory_order_release);
    if (slots == 0) return;  // a slot that frees up pumps again
    claiming_ = true;
    wanted_ = false;
    asio::co_spawn(strand_, claim_from_store(slots), core::log_failures("claiming work: "));
}

asio::awaitable<void> scheduler::claim_from_store(std::size_t slots) {
    store::claim_request r;
    r.limit = slots;
    for (const auto* k : kinds_.all()) {
        if (k->defaults.concurrency)
            r.limited.emplace_back(k->name, k->defaults.concurrency);
        else
            r.kinds.push_back(k->name);
    }
    std::sort(r.limited.begin(), r.limited.end());
    store::claim_result claimed;
    std::exception_ptr failure;
    try {
        claimed = co_await cluster_->claim(std::move(r), core::now_ms());
    } catch (...) {
        failure = std::current_exception();
    }
    claiming_ = false;
    if (failure) {
        free_slots_.fetch_add(static_cast<int>(slots), std::memory_order_acq_rel);
        // Logged at the 1st, 2nd, 4th, 8th... failure in a row; tried again in a second.
        if (std::has_single_bit(++claim_failures_))
            core::log_failure(failure, "cannot claim work (failure " +
                                           std::to_string(claim_failures_) +
                                           " in a row), retrying in 1 s: ");
        arm_due_timer(core::now_ms() + 1000);
        co_return;
    }
    claim_failures_ = 0;
    const auto started = claimed.started.size();
    free_slots_.fetch_add(static_cast<int>(slots - started), std::memory_order_acq_rel);
    for (auto& op : claimed.started) {
        auto ctrl = track(op.id, op.row, op.kind);
        ctrl->priority = op.priority;
        ctrl->tenant = op.tenant;
        // Claimed while the shutdown began: handed back to pending at once.
        if (stopping_) ctrl->stop(stop_reason::shutdown);
        spawn_job(ctrl, std::move(op));
    }
    // Every slot taken: more may be waiting.
    if (started == slots) wanted_ = true;
    if (claimed.next_due) arm_due_timer(*claimed.next_due);
    pump();
}

void scheduler::arm_due_timer(core::millis due) {
    const auto wait_ms = std::max<core::millis>(due - core::now_ms(), 0);
    const auto at = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
    const auto now = std::chrono::steady_clock::now();
    if (delay_timer_.expiry() > now && delay_timer_.expiry() <= at) return;  // armed earlier
    delay_timer_.expires_at(at);
    delay_timer_.async_wait(asio::bind_executor(strand_, [this](boost::system::error_code ec) {
        if (ec == asio::error::operation_aborted) return;
        want_work();
    }));
}

void scheduler::cancel_running(const std::string& id) {
    auto r = running_.find(id);
    if (r == running_.end()) return;
    auto ctrl = r->second;
    if (std::exchange(ctrl->cancel_asked, true)) return;
    asio::post(ctrl->strand, [ctrl] { ctrl->stop(stop_reason::cancel); });
}

asio::awaitable<void> scheduler::count_shared_pending() {
    {
        std::lock_guard lock(tenants_mutex_);
        for (auto& [tenant, n] : committed_recently_) committed_before_count_[tenant] += n;
        committed_recently_.clear();
    }
    auto counts = co_await cluster_->pending_by_tenant();
    std::int64_t total = 0;
    std::lock_guard lock(tenants_mutex_);
    shared_pending_.clear();
    for (auto& [tenant, n] : counts) {
        total += n;
        shared_pending_.emplace(std::move(tenant), n);
    }
    // Committed before the count began: it has them.
    committed_before_count_.clear();
    stats_.pending.store(total);
}

asio::awaitable<void> scheduler::keep_in_touch() {
    // A node is taken for dead only while this one reached the database all along: after an
    // outage of the database, every node first gets a node timeout to heart-beat again.
    std::optional<std::chrono::steady_clock::time_point> reachable_since;
    std::uint64_t failures = 0;
    auto complain = [&failures](const std::exception_ptr& e, const char* what) {
        if (std::has_single_bit(++failures))
            core::log_failure(e, std::string(what) + " (failure " + std::to_string(failures) +
                                     " in a row): ");
    };
    while (!stopping_) {
        bool leader = false;
        try {
            leader = co_await cluster_->heartbeat(settings_.node_timeout);
            if (!reachable_since) reachable_since = std::chrono::steady_clock::now();
            failures = 0;
        } catch (...) {
            reachable_since.reset();
            complain(std::current_exception(), "cannot heart-beat");
        }
        if (reachable_since) {
            try {
                if (leader &&
                    std::chrono::steady_clock::now() - *reachable_since >= settings_.node_timeout)
                    co_await cluster_->rescue(settings_.node_timeout, core::now_ms());
                auto cancels = co_await cluster_->cancels_requested();
                for (const auto& id : cancels) cancel_running(id);
                co_await count_shared_pending();
            } catch (...) {
                complain(std::current_exception(), "cannot look after the nodes");
            }
        }
        if (stopping_) break;
        // What no signal announced (a deaf moment, a signal lost with a connection).
        want_work();
        beat_timer_.expires_after(settings_.poll_interval);
        co_await beat_timer_.async_wait(tuple_awaitable);
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
