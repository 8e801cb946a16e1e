#include "auth/limits.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <stdexcept>

namespace buzzer::auth {

token_bucket::token_bucket(double rate_per_s, double burst)
    : rate_(rate_per_s), burst_(burst), tokens_(burst) {
    if (!(rate_per_s > 0) || !std::isfinite(rate_per_s) || !(burst >= 1) || !std::isfinite(burst))
        throw std::invalid_argument("a token bucket needs a rate above 0 and a burst of 1 or more");
}

void token_bucket::refill(clock::time_point now) {
    // Threads may pass slightly older times than the last one: time never runs back here.
    if (!last_ || now > *last_) {
        if (last_) {
            const double elapsed = std::chrono::duration<double>(now - *last_).count();
            tokens_ = std::min(burst_, tokens_ + elapsed * rate_);
        }
        last_ = now;
    }
}

void token_bucket::debit(double n, clock::time_point now) {
    std::lock_guard lock(mutex_);
    refill(now);
    if (n > 0) tokens_ = std::max(-burst_, tokens_ - n);
}

double token_bucket::take(clock::time_point now) {
    std::lock_guard lock(mutex_);
    refill(now);
    if (tokens_ >= 1) {
        tokens_ -= 1;
        return 0;
    }
    return (1 - tokens_) / rate_;
}

namespace {

// The second is counted in tenths: an address's failures of the last ten of them.
constexpr std::int64_t slot_ms = 100;
constexpr std::size_t slots = 10;

std::int64_t slot_of(failure_limiter::clock::time_point t) {
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
    return ms >= 0 ? ms / slot_ms : (ms - slot_ms + 1) / slot_ms;
}

std::size_t index_of(std::int64_t slot) {
    const auto n = static_cast<std::int64_t>(slots);
    return static_cast<std::size_t>((slot % n + n) % n);
}

struct address_entry {
    std::string address;
    std::int64_t newest = 0;  // the newest slot of the window
    std::int64_t last = 0;    // the slot of the last failure
    std::array<std::uint32_t, slots> counts{};

    // Moves the window on to `slot`, forgetting failures that left it.
    void advance(std::int64_t slot) {
        if (slot <= newest) return;
        const std::int64_t gone = std::min<std::int64_t>(slot - newest, slots);
        for (std::int64_t s = newest + 1; s <= newest + gone; ++s) counts[index_of(s)] = 0;
        newest = slot;
    }
    std::uint64_t total() const {
        std::uint64_t n = 0;
        for (auto c : counts) n += c;
        return n;
    }
    // Whether every failure has left the window at `slot`.
    bool faded(std::int64_t slot) const { return slot - last >= static_cast<std::int64_t>(slots); }
};

}  // namespace

struct failure_limiter::impl {
    unsigned limit;
    std::size_t capacity;
    mutable std::mutex mutex;
    // The address whose last failure is newest first; the index views the entries' strings.
    std::list<address_entry> order;
    std::unordered_map<std::string_view, std::list<address_entry>::iterator> index;

    void erase(std::list<address_entry>::iterator it) {
        index.erase(it->address);
        order.erase(it);
    }
};

failure_limiter::failure_limiter(unsigned per_second, std::size_t max_addresses)
    : impl_(std::make_unique<impl>()) {
    impl_->limit = per_second;
    impl_->capacity = std::max<std::size_t>(max_addresses, 1);
}

failure_limiter::~failure_limiter() = default;

double failure_limiter::blocked(std::string_view address, clock::time_point now) {
    const std::int64_t slot = slot_of(now);
    std::lock_guard lock(impl_->mutex);
    auto found = impl_->index.find(address);
    if (found == impl_->index.end()) return 0;
    auto& e = *found->second;
    if (e.faded(slot)) {
        impl_->erase(found->second);
        return 0;
    }
    e.advance(slot);
    std::uint64_t left = e.total();
    if (left <= impl_->limit) return 0;
    // The oldest slots leave the window first: blocked until enough of them have.
    const std::int64_t now_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
    for (std::int64_t s = e.newest - static_cast<std::int64_t>(slots) + 1; s <= e.newest; ++s) {
        left -= e.counts[index_of(s)];
        if (left <= impl_->limit) {
            const std::int64_t free_at = (s + static_cast<std::int64_t>(slots)) * slot_ms;
            return std::clamp(static_cast<double>(free_at - now_ms) / 1000.0, 0.001, 1.0);
        }
    }
    return 1.0;
}

void failure_limiter::failed(std::string_view address, clock::time_point now) {
    const std::int64_t slot = slot_of(now);
    std::lock_guard lock(impl_->mutex);
    auto& order = impl_->order;
    auto found = impl_->index.find(address);
    if (found != impl_->index.end()) {
        order.splice(order.begin(), order, found->second);
    } else {
        // Forget addresses whose failures have all faded, then the least recent if still full.
        while (!order.empty() && order.back().faded(slot)) impl_->erase(std::prev(order.end()));
        if (order.size() >= impl_->capacity) impl_->erase(std::prev(order.end()));
        order.push_front(address_entry{std::string(address), slot, slot, {}});
        impl_->index.emplace(order.front().address, order.begin());
    }
    auto& e = order.front();
    e.advance(slot);
    auto& count = e.counts[index_of(e.newest)];
    if (count < UINT32_MAX) ++count;
    e.last = e.newest;
}

std::size_t failure_limiter::size() const {
    std::lock_guard lock(impl_->mutex);
    return impl_->index.size();
}

}  // namespace buzzer::auth
