#include "core/log.hpp"

#include <unistd.h>

#include <string>

#include "core/time.hpp"

namespace buzzer::core {

void log(level l, std::string_view message) {
    static constexpr std::string_view names[] = {"debug", "info", "warn", "error"};
    std::string line = format_time(now_ms());
    line += ' ';
    line += names[static_cast<int>(l)];
    line += ' ';
    line += message;
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
