// Minimal logging to standard error, one line per message.
#pragma once

#include <exception>
#include <string>
#include <string_view>

namespace buzzer::core {

/// Severity of a log line.
enum class level { debug, info, warn, error };

/// The level a name stands for ("debug", "info", "warn", "error"); false for another name.
bool parse_level(std::string_view name, level& out);

/// How lines are written, for the whole process: text (`TIME LEVEL message`, the default) or
/// one JSON object a line (`{"time":…,"level":…,"message":…}`), and the least severe level
/// written (info by default).
void configure_log(bool json, level least);

/// Writes a line of `message` at `l` to standard error, unless below the configured level
/// (thread-safe, one write per line).
void log(level l, std::string_view message);

/// Logs `failure`, if set, at `l` (an error by default): `context` followed by its message.
void log_failure(const std::exception_ptr& failure, std::string_view context,
                 level l = level::error);

/// A completion handler for `co_spawn` that logs the coroutine's failure after `context`.
inline auto log_failures(std::string context) {
    return [context = std::move(context)](const std::exception_ptr& e) { log_failure(e, context); };
}

}  // namespace buzzer::core
