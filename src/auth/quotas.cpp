#include "auth/quotas.hpp"

#include "auth/limits.hpp"

namespace buzzer::auth {

submit_rates::submit_rates(std::size_t max_tenants) : max_tenants_(max_tenants) {}

submit_rates::~submit_rates() = default;

double submit_rates::take(std::string_view tenant, const quota& q,
                          std::chrono::steady_clock::time_point now) {
    if (!q.submit_rate) return 0;
    std::lock_guard lock(mutex_);
    auto it = buckets_.find(std::string(tenant));
    if (it == buckets_.end() || it->second.rate != *q.submit_rate ||
        it->second.burst != q.submit_burst) {
        if (it == buckets_.end() && buckets_.size() >= max_tenants_) {
            // A bucket untouched for as long as it takes to fill up is as good as new.
            std::erase_if(buckets_, [&](const auto& kv) {
                const auto idle = std::chrono::duration<double>(now - kv.second.last).count();
                return idle * kv.second.rate >= kv.second.burst;
            });
            if (buckets_.size() >= max_tenants_) buckets_.clear();
        }
        slot s;
        s.bucket = std::make_unique<token_bucket>(*q.submit_rate, q.submit_burst);
        s.rate = *q.submit_rate;
        s.burst = q.submit_burst;
        it = buckets_.insert_or_assign(std::string(tenant), std::move(s)).first;
    }
    it->second.last = now;
    const double wait = it->second.bucket->take(now);
    if (wait == 0 && admitted_.size() < max_tenants_) ++admitted_[it->first];
    return wait;
}

void submit_rates::clear() {
    std::lock_guard lock(mutex_);
    buckets_.clear();
}

std::vector<std::pair<std::string, std::int64_t>> submit_rates::take_admitted() {
    std::unordered_map<std::string, std::int64_t> taken;
    {
        std::lock_guard lock(mutex_);
        taken.swap(admitted_);
    }
    return {taken.begin(), taken.end()};
}

void submit_rates::restore_admitted(
    const std::vector<std::pair<std::string, std::int64_t>>& admitted) {
    std::lock_guard lock(mutex_);
    for (const auto& [tenant, n] : admitted)
        if (admitted_.size() < max_tenants_ || admitted_.count(tenant)) admitted_[tenant] += n;
}

void submit_rates::debit(std::string_view tenant, double n,
                         std::chrono::steady_clock::time_point now) {
    std::lock_guard lock(mutex_);
    auto it = buckets_.find(std::string(tenant));
    if (it == buckets_.end()) return;
    it->second.last = now;
    it->second.bucket->debit(n, now);
}

}  // namespace buzzer::auth
