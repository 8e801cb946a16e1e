// The fan-out hub: committed events are handed to the subscribers of their operations.
// All state lives on the hub's strand; subscribers read from bounded channels.
#pragma once

#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/experimental/concurrent_channel.hpp>
#include <boost/asio/strand.hpp>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "store/store.hpp"

namespace buzzer::sse {

/// A shared, immutable event.
using event_ptr = std::shared_ptr<const store::event>;

/// A bounded queue of live events for one waiter.
using event_channel =
    boost::asio::experimental::concurrent_channel<void(boost::system::error_code, event_ptr)>;

/// One subscriber: the operations it follows and its channel.
struct subscription {
    subscription(boost::asio::any_io_executor ex, std::vector<std::string> ids,
                 std::size_t capacity)
        : operation_ids(std::move(ids)), channel(std::move(ex), capacity) {}
    std::vector<std::string> operation_ids;
    event_channel channel;
    /// Set when the subscriber fell behind and its channel was closed.
    std::atomic<bool> overflowed{false};
};

class hub;

/// Routes committed events to subscribers.
class hub {
  public:
    explicit hub(boost::asio::any_io_executor ex);

    /// Registers a subscriber; once this returns, every later publish reaches it.
    boost::asio::awaitable<std::shared_ptr<subscription>> subscribe(
        std::vector<std::string> operation_ids, std::size_t capacity);

    /// Removes a subscriber (idempotent).
    void unsubscribe(const std::shared_ptr<subscription>& s);

    /// Hands committed events to subscribers; callable from any thread, keeps order.
    void publish(std::vector<store::event> events);

    /// Closes every channel and refuses new subscribers (they get a closed channel).
    void shutdown();

    /// Current number of subscribers.
    std::size_t subscribers() const { return count_.load(); }

  private:
    boost::asio::strand<boost::asio::any_io_executor> strand_;
    std::unordered_multimap<std::string, std::shared_ptr<subscription>> by_operation_;
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
