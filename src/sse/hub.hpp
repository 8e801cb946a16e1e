// The fan-out hub: committed events are handed to the subscribers of their operations.
// All hub state lives on the hub's strand; each subscriber drains a bounded mailbox.
#pragma once

#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "core/event.hpp"
#include "core/histogram.hpp"

namespace buzzer::sse {

/// A committed event as the hub hands it out: formatted for the wire once, for every stream.
struct live_event : core::event {
    live_event(core::event e, std::string frame)
        : core::event(std::move(e)), frame(std::move(frame)) {}
    std::string frame;  ///< "id: …\nevent: …\ndata: …\n\n"
};

/// A shared, immutable event.
using event_ptr = std::shared_ptr<const live_event>;

/// Live events for one subscriber: filled by the hub from any thread, drained by one waiting
/// coroutine. It holds at most `capacity` events; a push past that closes it, and the
/// subscriber (a slow reader) resumes from its last id. A new mailbox owns no heap memory.
class mailbox {
  public:
    explicit mailbox(std::size_t capacity);
    ~mailbox();
    mailbox(const mailbox&) = delete;
    mailbox& operator=(const mailbox&) = delete;

    /// Queues an event, or with null a wake-up (a heartbeat or a deadline). Returns false,
    /// and closes the mailbox, when it is full; false also once it is closed.
    bool push(event_ptr e);

    /// Ends it: the waiter wakes, and `wait` returns false from now on.
    void close();

    /// Waits until something is queued or the mailbox is closed; false when closed (whatever
    /// is still queued is then dropped). One waiter at a time.
    boost::asio::awaitable<bool> wait();

    /// Moves everything queued into `out` (cleared first); its capacity is reused.
    void take(std::vector<event_ptr>& out);

    /// Whether nothing is queued.
    bool empty() const;

    /// Whether a push past the capacity closed it.
    bool overflowed() const;

    /// Calls `fn` once when a push past the capacity closes it, on the pushing thread (at once
    /// if that has happened already): the subscriber may be busy writing, not waiting.
    void on_overflow(std::function<void()> fn);

    /// The suspended coroutine's completion handler, type-erased.
    struct waiter;

  private:
    void wake(std::unique_lock<std::mutex>& lock);

    const std::size_t capacity_;
    mutable std::mutex mutex_;
    std::vector<event_ptr> queue_;
    std::size_t events_ = 0;  ///< non-null entries of queue_
    bool closed_ = false;
    bool overflowed_ = false;
    std::unique_ptr<waiter> waiter_;
    std::function<void()> on_overflow_;
};

/// One subscriber: the operations it follows and its mailbox.
struct subscription {
    subscription(std::vector<std::string> ids, std::size_t capacity, bool heartbeat)
        : operation_ids(std::move(ids)), box(capacity), heartbeat(heartbeat) {}
    std::vector<std::string> operation_ids;
    mailbox box;
    /// Whether the hub wakes it with a null entry once it has been idle for the heartbeat.
    const bool heartbeat;
    /// When the subscriber last wrote to its client (steady clock ticks); see `touch`.
    std::atomic<std::chrono::steady_clock::rep> last_write{0};

    /// Records a write to the client now.
    void touch() {
        last_write.store(std::chrono::steady_clock::now().time_since_epoch().count(),
                         std::memory_order_relaxed);
    }
};

/// Routes committed events to subscribers, and wakes idle streams for their heartbeat.
class hub {
  public:
    /// `heartbeat`: idle time after which a heartbeat subscriber gets a null entry;
    /// `base_url`: the prefix of the links that events carry.
    hub(boost::asio::any_io_executor ex, std::chrono::steady_clock::duration heartbeat,
        std::string base_url = {});

    /// Registers a subscriber; once this returns, every later publish reaches it.
    boost::asio::awaitable<std::shared_ptr<subscription>> subscribe(
        std::vector<std::string> operation_ids, std::size_t capacity, bool heartbeat = false);

    /// Removes a subscriber and closes its mailbox (idempotent).
    void unsubscribe(const std::shared_ptr<subscription>& s);

    /// Hands committed events to subscribers; callable from any thread, keeps order.
    void publish(std::vector<core::event> events);

    /// Closes every mailbox, stops the heartbeat and refuses new subscribers (they get a
    /// closed mailbox).
    void shutdown();

    /// Current number of subscribers.
    std::size_t subscribers() const { return count_.load(); }

    /// Commit of a live event → its text written to a subscriber's socket.
    core::histogram delivery;

  private:
    void arm_heartbeat();
    void beat();

    boost::asio::strand<boost::asio::any_io_executor> strand_;
    std::chrono::steady_clock::duration heartbeat_;
    std::string base_url_;
    boost::asio::steady_timer ticker_;
    bool ticking_ = false;
    /// Keys view the subscription's own ids, which it keeps while it is in the map.
    std::unordered_multimap<std::string_view, std::shared_ptr<subscription>> by_operation_;
    std::unordered_set<std::shared_ptr<subscription>> beating_;  ///< heartbeat subscribers
    std::atomic<std::size_t> count_{0};
    bool closed_ = false;
};

/// Unsubscribes when leaving a scope.
class subscription_guard {
  public:
    subscription_guard(hub& h, std::shared_ptr<subscription> s) : hub_(h), sub_(std::move(s)) {}
    ~subscription_guard() { hub_.unsubscribe(sub_); }
    subscription_guard(const subscription_guard&) = delete;
    subscription_guard& operator=(const subscription_guard&) = delete;

  private:
    hub& hub_;
    std::shared_ptr<subscription> sub_;
};

}  // namespace buzzer::sse
