// Retry delays: exponential backoff with full jitter.
#pragma once

#include <cstdint>

namespace buzzer::jobs {

/// The upper bound of the delay after failed attempt `attempt` (1-based): base * 2^(attempt-1),
/// capped at `cap`, in milliseconds.
std::int64_t backoff_ceiling_ms(int attempt, double base_s, double cap_s);

/// A delay drawn uniformly from [0, ceiling] ("full jitter").
std::int64_t backoff_delay_ms(int attempt, double base_s, double cap_s);

}  // namespace buzzer::jobs
