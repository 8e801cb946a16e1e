#include "jobs/backoff.hpp"

#include <algorithm>
#include <cmath>
#include <random>

namespace buzzer::jobs {

std::int64_t backoff_ceiling_ms(int attempt, double base_s, double cap_s) {
    double exp = std::min(std::max(attempt - 1, 0), 62);
    double ceiling = std::min(base_s * std::pow(2.0, exp), cap_s);
    return static_cast<std::int64_t>(std::max(ceiling, 0.0) * 1000.0);
}

std::int64_t backoff_delay_ms(int attempt, double base_s, double cap_s) {
    thread_local std::mt19937_64 rng{std::random_device{}()};
    std::uniform_int_distribution<std::int64_t> pick(0, backoff_ceiling_ms(attempt, base_s, cap_s));
    return pick(rng);
}

}  // namespace buzzer::jobs
