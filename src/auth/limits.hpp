// Bounded, thread-safe limits of the access control: a token bucket, the limit on failed
// authentications per client address, and a cache of verified credentials.
#pragma once

#include <chrono>
#include <cstddef>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "core/time.hpp"

namespace buzzer::auth {

/// A token bucket: `burst` tokens at most, refilled at `rate_per_s`. Thread-safe.
class token_bucket {
  public:
    using clock = std::chrono::steady_clock;

    /// A full bucket. Throws std::invalid_argument unless rate_per_s > 0 and burst >= 1 (an
    /// unlimited rate is the caller's to handle: it needs no bucket).
    token_bucket(double rate_per_s, double burst);

    /// Takes a token: 0 when one was there, else the seconds until one will be (nothing taken).
    double take(clock::time_point now);

    /// Takes `n` tokens that were spent elsewhere (another node of the same quota): the bucket
    /// may go into debt, down to -burst, which it pays back at its rate.
    void debit(double n, clock::time_point now);

  private:
    void refill(clock::time_point now);  // under mutex_

    std::mutex mutex_;
    double rate_;
    double burst_;
    double tokens_;
    std::optional<clock::time_point> last_;
};

/// Counts failed authentications per client address over the last second (in tenths of a
/// second), for at most `max_addresses` addresses: when the table is full, the address whose
/// last failure is oldest is forgotten. Addresses whose failures are all older than a second
/// are dropped. Thread-safe.
class failure_limiter {
  public:
    using clock = std::chrono::steady_clock;

    explicit failure_limiter(unsigned per_second = 20, std::size_t max_addresses = 65536);
    ~failure_limiter();
    failure_limiter(const failure_limiter&) = delete;
    failure_limiter& operator=(const failure_limiter&) = delete;

    /// 0 while `address` has had at most `per_second` failures in the last second, else the
    /// seconds until it will have (more than 0, at most 1).
    double blocked(std::string_view address, clock::time_point now);

    /// Records a failed authentication from `address`.
    void failed(std::string_view address, clock::time_point now);

    /// How many addresses are tracked.
    std::size_t size() const;

  private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

/// A bounded map from a credential's hash to what verifying it found (`V`), each entry until
/// its expiry; when full, the least recently used entry goes. Thread-safe.
template <class V>
class verified_cache {
  public:
    /// A cache of at most `capacity` entries (0: caches nothing).
    explicit verified_cache(std::size_t capacity) : capacity_(capacity) {}

    /// The value under `key`, unless missing or expired at `now` (an expired one is removed).
    std::optional<V> find(std::string_view key, core::millis now) {
        std::lock_guard lock(mutex_);
        auto it = index_.find(key);
        if (it == index_.end()) return std::nullopt;
        if (it->second->expires_at <= now) {
            order_.erase(it->second);
            index_.erase(it);
            return std::nullopt;
        }
        order_.splice(order_.begin(), order_, it->second);
        return it->second->value;
    }

    /// Keeps `value` under `key` until `expires_at`, in place of what was there.
    void put(std::string key, V value, core::millis expires_at) {
        if (capacity_ == 0) return;
        std::lock_guard lock(mutex_);
        if (auto it = index_.find(key); it != index_.end()) {
            it->second->value = std::move(value);
            it->second->expires_at = expires_at;
            order_.splice(order_.begin(), order_, it->second);
            return;
        }
        if (index_.size() >= capacity_) {
            index_.erase(order_.back().key);
            order_.pop_back();
        }
        order_.push_front(entry{std::move(key), std::move(value), expires_at});
        index_.emplace(order_.front().key, order_.begin());
    }

    /// Removes every entry whose value satisfies `pred` (e.g. those of a revoked key).
    template <class Pred>
    void erase_if(Pred pred) {
        std::lock_guard lock(mutex_);
        for (auto it = order_.begin(); it != order_.end();) {
            if (pred(std::as_const(it->value))) {
                index_.erase(it->key);
                it = order_.erase(it);
            } else {
                ++it;
            }
        }
    }

    /// Removes every entry.
    void clear() {
        std::lock_guard lock(mutex_);
        index_.clear();
        order_.clear();
    }

    /// How many entries are held, expired ones included.
    std::size_t size() const {
        std::lock_guard lock(mutex_);
        return index_.size();
    }

  private:
    struct entry {
        std::string key;
        V value;
        core::millis expires_at;
    };
    mutable std::mutex mutex_;
    std::size_t capacity_;
    // Most recently used first; the index's keys view the entries' own strings.
    std::list<entry> order_;
    std::unordered_map<std::string_view, typename std::list<entry>::iterator> index_;
};

}  // namespace buzzer::auth
