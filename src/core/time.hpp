// Wall-clock time as milliseconds since the Unix epoch, and its RFC 3339 form.
#pragma once

#include <cstdint>
#include <string>

namespace buzzer::core {

/// Milliseconds since the Unix epoch, UTC.
using millis = std::int64_t;

/// The current wall-clock time.
millis now_ms();

/// `2026-11-22T02:04:54.123Z`.
std::string format_time(millis t);

/// Appends `format_time(t)` to `out`.
void append_time(std::string& out, millis t);

}  // namespace buzzer::core
