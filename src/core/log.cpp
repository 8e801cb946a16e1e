#include "core/log.hpp"

#include <unistd.h>

#include <atomic>
#include <string>

#include "core/operation.hpp"
#include "core/time.hpp"

namespace buzzer::core {

namespace {

constexpr std::string_view names[] = {"debug", "info", "warn", "error"};
std::atomic<bool> json_lines{false};
std::atomic<int> least_level{static_cast<int>(level::info)};

}  // namespace

bool parse_level(std::string_view name, level& out) {
    for (int i = 0; i < 4; ++i)
        if (names[i] == name) {
            out = static_cast<level>(i);
            return true;
        }
    return false;
}

void configure_log(bool json, level least) {
    json_lines.store(json, std::memory_order_relaxed);
    least_level.store(static_cast<int>(least), std::memory_order_relaxed);
}

void log(level l, std::string_view message) {
    if (static_cast<int>(l) < least_level.load(std::memory_order_relaxed)) return;
    std::string line;
    if (json_lines.load(std::memory_order_relaxed)) {
        line = R"({"time":")";
        append_time(line, now_ms());
        line += R"(","level":")";
        line += names[static_cast<int>(l)];
        line += R"(","message":)";
        append_json_string(line, message);
        line += '}';
    } else {
        line = format_time(now_ms());
        line += ' ';
        line += names[static_cast<int>(l)];
        line += ' ';
        // A message never spans lines: a line break in it (from a peer's text) is escaped.
        for (char c : message) {
            if (c == '\n' || c == '\r')
                line += c == '\n' ? "\\n" : "\\r";
            else
                line += c;
        }
    }
    line += '\n';
    // One write(2) per line keeps lines from different threads whole.
    ssize_t rc = ::write(STDERR_FILENO, line.data(), line.size());
    (void)rc;
}

void log_failure(const std::exception_ptr& failure, std::string_view context, level l) {
    if (!failure) return;
    std::string message(context);
    try {
        std::rethrow_exception(failure);
    } catch (const std::exception& e) {
        message += e.what();
    } catch (...) {
        message += "unknown error";
    }
    log(l, message);
}

}  // namespace buzzer::core
