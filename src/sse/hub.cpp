#include "sse/hub.hpp"

#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "core/run_on.hpp"

namespace buzzer::sse {
namespace asio = boost::asio;

hub::hub(asio::any_io_executor ex) : strand_(asio::make_strand(ex)) {}

asio::awaitable<std::shared_ptr<subscription>> hub::subscribe(
    std::vector<std::string> operation_ids, std::size_t capacity) {
    auto ex = co_await asio::this_coro::executor;
    auto sub = std::make_shared<subscription>(ex, std::move(operation_ids), capacity);
    // Register on the hub's strand; the caller resumes on its own executor afterwards.
    // Named: g++ 12 destroys capturing lambda temporaries of a co_await expression twice.
    auto add = [this, sub] {
        if (closed_) {
            sub->channel.close();
            return;
        }
        for (const auto& id : sub->operation_ids) by_operation_.emplace(id, sub);
        count_.fetch_add(1);
    };
    co_await core::run_on(strand_, std::move(add));
    co_return sub;
}

void hub::unsubscribe(const std::shared_ptr<subscription>& s) {
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
        if (removed) count_.fetch_sub(1);
    });
}

void hub::publish(std::vector<store::event> events) {
    asio::post(strand_, [this, events = std::move(events)]() mutable {
        for (auto& e : events) {
            auto [first, last] = by_operation_.equal_range(e.operation_id);
            if (first == last) continue;
            auto shared = std::make_shared<const store::event>(std::move(e));
            for (auto it = first; it != last; ++it) {
                auto& sub = it->second;
                if (sub->overflowed) continue;
                // A full channel means a slow reader: end its stream; it resumes by id.
                if (!sub->channel.try_send(boost::system::error_code{}, shared)) {
                    sub->overflowed = true;
                    sub->channel.close();
                }
            }
        }
    });
}

void hub::shutdown() {
    asio::dispatch(strand_, [this] {
        closed_ = true;
        for (auto& [id, sub] : by_operation_) sub->channel.close();
    });
}

}  // namespace buzzer::sse
