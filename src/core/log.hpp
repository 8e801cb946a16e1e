// Minimal logging to standard error, one line per message.
#pragma once

#include <string_view>

namespace buzzer::core {

/// Severity of a log line.
enum class level { debug, info, warn, error };

/// Writes "LEVEL message" to standard error (thread-safe, one write per line).
void log(level l, std::string_view message);

}  // namespace buzzer::core
