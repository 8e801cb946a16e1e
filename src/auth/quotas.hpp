// The submission rate of each tenant: a token bucket per tenant, as its quota says.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "auth/settings.hpp"

namespace buzzer::auth {

class token_bucket;

/// Token buckets per tenant. Thread-safe; bounded (tenants idle long enough to have a full
/// bucket are dropped first when the table is full).
class submit_rates {
  public:
    explicit submit_rates(std::size_t max_tenants = 100'000);
    ~submit_rates();

    /// Takes one submission of `tenant` under `q`: 0 when admitted, else the seconds until
    /// one would be.
    double take(std::string_view tenant, const quota& q, std::chrono::steady_clock::time_point now);

    /// Forgets every bucket (after the quotas changed).
    void clear();

    /// The submissions admitted under a rate per tenant since the last call (for the other
    /// nodes of a shared database), and forgets them.
    std::vector<std::pair<std::string, std::int64_t>> take_admitted();

    /// Gives back what take_admitted() returned but could not be shared.
    void restore_admitted(const std::vector<std::pair<std::string, std::int64_t>>& admitted);

    /// Takes `n` submissions that other nodes admitted for `tenant` from its bucket (none
    /// when this node has no bucket for it: it has not seen the tenant submit).
    void debit(std::string_view tenant, double n, std::chrono::steady_clock::time_point now);

  private:
    struct slot {
        std::unique_ptr<token_bucket> bucket;
        double rate = 0;
        double burst = 0;
        std::chrono::steady_clock::time_point last;
    };
    std::mutex mutex_;
    std::unordered_map<std::string, slot> buckets_;
    std::unordered_map<std::string, std::int64_t> admitted_;
    std::size_t max_tenants_;
};

}  // namespace buzzer::auth
