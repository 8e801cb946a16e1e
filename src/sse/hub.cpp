#include "sse/hub.hpp"

#include <algorithm>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "core/run_on.hpp"
#include "sse/format.hpp"

namespace buzzer::sse {
namespace asio = boost::asio;
using clock = std::chrono::steady_clock;

// ---------------------------------------------------------------------------------------------
// mailbox

// Type-erased completion handler of a waiting coroutine; `resume` posts it to its executor.
struct mailbox::waiter {
    virtual ~waiter() = default;
    /// Completes the wait with whether the mailbox is still open.
    virtual void resume(bool open) = 0;
};

namespace {

template <class Handler>
struct waiter_for final : mailbox::waiter {
    explicit waiter_for(Handler h) : handler(std::move(h)) {}
    void resume(bool open) override {
        auto ex = asio::get_associated_executor(handler);
        asio::post(ex, [h = std::move(handler), open]() mutable { std::move(h)(open); });
    }
    Handler handler;
};

}  // namespace

mailbox::mailbox(std::size_t capacity) : capacity_(capacity) {}

mailbox::~mailbox() = default;

void mailbox::wake(std::unique_lock<std::mutex>& lock) {
    if (!waiter_) return;
    auto w = std::move(waiter_);
    const bool open = !closed_;
    lock.unlock();
    // On the waiter's own executor, never inside the pusher's call.
    w->resume(open);
}

bool mailbox::push(event_ptr e) {
    std::unique_lock lock(mutex_);
    if (closed_) return false;
    if (e) {
        if (events_ >= capacity_) {
            closed_ = true;
            overflowed_ = true;
            queue_ = {};
            auto notify = std::move(on_overflow_);
            wake(lock);
            if (lock.owns_lock()) lock.unlock();
            if (notify) notify();
            return false;
        }
        ++events_;
    }
    queue_.push_back(std::move(e));
    wake(lock);
    return true;
}

void mailbox::close() {
    std::unique_lock lock(mutex_);
    if (closed_) return;
    closed_ = true;
    queue_ = {};
    wake(lock);
}

bool mailbox::overflowed() const {
    std::lock_guard lock(mutex_);
    return overflowed_;
}

void mailbox::on_overflow(std::function<void()> fn) {
    std::unique_lock lock(mutex_);
    if (!overflowed_) {
        on_overflow_ = std::move(fn);
        return;
    }
    lock.unlock();
    fn();
}

bool mailbox::empty() const {
    std::lock_guard lock(mutex_);
    return queue_.empty();
}

void mailbox::take(std::vector<event_ptr>& out) {
    out.clear();
    std::lock_guard lock(mutex_);
    out.swap(queue_);
    events_ = 0;
}

asio::awaitable<bool> mailbox::wait() {
    // Not a coroutine itself: an idle stream keeps one frame fewer.
    auto initiate = [this](auto handler) {
        std::unique_lock lock(mutex_);
        if (closed_ || !queue_.empty()) {
            const bool open = !closed_;
            lock.unlock();
            waiter_for<decltype(handler)>(std::move(handler)).resume(open);
            return;
        }
        waiter_ = std::make_unique<waiter_for<decltype(handler)>>(std::move(handler));
    };
    return asio::async_initiate<decltype(asio::use_awaitable), void(bool)>(initiate,
                                                                           asio::use_awaitable);
}

// ---------------------------------------------------------------------------------------------
// hub

hub::hub(asio::any_io_executor ex, clock::duration heartbeat, std::string base_url)
    : strand_(asio::make_strand(ex)),
      heartbeat_(heartbeat),
      base_url_(std::move(base_url)),
      ticker_(strand_) {}

asio::awaitable<std::shared_ptr<subscription>> hub::subscribe(
    std::vector<std::string> operation_ids, std::size_t capacity, bool heartbeat) {
    auto sub = std::make_shared<subscription>(std::move(operation_ids), capacity, heartbeat);
    sub->touch();
    // Register on the hub's strand; the caller resumes on its own executor afterwards.
    // Named: g++ 12 destroys capturing lambda temporaries of a co_await expression twice.
    auto add = [this, sub] {
        if (closed_) {
            sub->box.close();
            return;
        }
        for (const auto& id : sub->operation_ids) by_operation_.emplace(id, sub);
        if (sub->heartbeat) {
            beating_.insert(sub);
            arm_heartbeat();
        }
        count_.fetch_add(1);
    };
    co_await core::run_on(strand_, std::move(add));
    co_return sub;
}

void hub::unsubscribe(const std::shared_ptr<subscription>& s) {
    s->box.close();
    asio::dispatch(strand_, [this, s] {
        bool removed = false;
        for (const auto& id : s->operation_ids) {
            auto [first, last] = by_operation_.equal_range(id);
            for (auto it = first; it != last;) {
                if (it->second == s) {
                    it = by_operation_.erase(it);
                    removed = true;
                } else {
                    ++it;
                }
            }
        }
        beating_.erase(s);
        if (removed) count_.fetch_sub(1);
    });
}

void hub::publish(std::vector<core::event> events) {
    asio::post(strand_, [this, events = std::move(events)]() mutable {
        for (auto& e : events) {
            auto [first, last] = by_operation_.equal_range(e.operation_id);
            if (first == last) continue;
            std::string frame = format_event(e, base_url_);
            auto shared = std::make_shared<const live_event>(std::move(e), std::move(frame));
            // A full mailbox closes itself: a slow reader's stream ends; it resumes by id.
            for (auto it = first; it != last; ++it) it->second->box.push(shared);
        }
    });
}

// Runs on the strand. Checks a few times per heartbeat, at most once every 10 ms and at least
// once a second, so a heartbeat comes 0–25 % (at most 1 s) after the idle time.
void hub::arm_heartbeat() {
    if (ticking_ || closed_ || beating_.empty()) return;
    ticking_ = true;
    auto period = std::clamp<clock::duration>(heartbeat_ / 4, std::chrono::milliseconds(10),
                                              std::chrono::seconds(1));
    ticker_.expires_after(period);
    ticker_.async_wait([this](boost::system::error_code ec) {
        ticking_ = false;
        if (ec) return;
        beat();
        arm_heartbeat();
    });
}

void hub::beat() {
    const auto now = clock::now().time_since_epoch().count();
    const auto idle = heartbeat_.count();
    for (const auto& sub : beating_)
        if (now - sub->last_write.load(std::memory_order_relaxed) >= idle && sub->box.empty())
            sub->box.push(nullptr);
}

void hub::shutdown() {
    asio::dispatch(strand_, [this] {
        closed_ = true;
        ticker_.cancel();
        for (auto& [id, sub] : by_operation_) sub->box.close();
    });
}

}  // namespace buzzer::sse
