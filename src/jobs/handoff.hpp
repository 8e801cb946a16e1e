// Items handed from any thread to one consumer on a strand, with one wake-up per burst.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/defer.hpp>
#include <boost/asio/post.hpp>
#include <mutex>
#include <utility>
#include <vector>

namespace buzzer::jobs {

/// Items handed to one consumer from any thread: whoever adds the first item after a take
/// is told so, and schedules the next take; the items added meanwhile go with it.
template <class T>
class handoff {
  public:
    /// Adds `item`; true when the list was empty (a take is due).
    bool push(T item) {
        std::lock_guard lock(mutex_);
        items_.push_back(std::move(item));
        return items_.size() == 1;
    }
    /// Everything added since the last take.
    std::vector<T> take() {
        std::vector<T> out;
        std::lock_guard lock(mutex_);
        out.swap(items_);
        return out;
    }

  private:
    std::mutex mutex_;
    std::vector<T> items_;
};

/// Adds `item` to `list`. The first item after a take schedules `take` on `strand`, once the
/// caller's thread has run the handlers queued with this one: the items they add go with it,
/// with one wake-up of the strand's thread.
template <class T, class Strand, class Take>
void hand_over(handoff<T>& list, T item, const boost::asio::any_io_executor& caller,
               const Strand& strand, Take take) {
    if (list.push(std::move(item)))
        boost::asio::defer(caller, [strand, take] { boost::asio::post(strand, take); });
}

}  // namespace buzzer::jobs
