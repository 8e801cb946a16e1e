#include "runtime/service_manager.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <charconv>
#include <cstddef>
#include <cstdlib>
#include <cstring>

#include "core/thread.hpp"

namespace buzzer::runtime {

namespace {

std::string take_env(const char* name) {
    const char* v = std::getenv(name);
    std::string out = v ? v : "";
    ::unsetenv(name);
    return out;
}

}  // namespace

service_manager::service_manager() {
    const auto socket_name = take_env("NOTIFY_SOCKET");
    const auto watchdog_usec = take_env("WATCHDOG_USEC");
    const auto watchdog_pid = take_env("WATCHDOG_PID");
    if (socket_name.empty()) return;
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (socket_name.size() >= sizeof(addr.sun_path) ||
        (socket_name[0] != '/' && socket_name[0] != '@'))
        return;  // not a socket this protocol knows
    std::memcpy(addr.sun_path, socket_name.data(), socket_name.size());
    if (socket_name[0] == '@') addr.sun_path[0] = '\0';  // the abstract namespace
    const auto length = offsetof(sockaddr_un, sun_path) + socket_name.size();
    address_.assign(reinterpret_cast<const char*>(&addr), length);
    // Non-blocking: states are sent from the event loops, which a manager that does not read
    // must not stall (a full queue drops the state instead).
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

    long long usec = 0, pid = 0;
    const bool for_us =
        watchdog_pid.empty() ||
        (std::from_chars(watchdog_pid.data(), watchdog_pid.data() + watchdog_pid.size(), pid).ec ==
             std::errc{} &&
         pid == ::getpid());
    if (for_us &&
        std::from_chars(watchdog_usec.data(), watchdog_usec.data() + watchdog_usec.size(), usec)
                .ec == std::errc{} &&
        usec > 0)
        watchdog_ = std::chrono::microseconds(usec);
}

service_manager::~service_manager() {
    stop_watchdog();
    if (fd_ >= 0) ::close(fd_);
}

void service_manager::notify(std::string_view state) const {
    if (fd_ < 0) return;
    (void)::sendto(fd_, state.data(), state.size(), MSG_NOSIGNAL,
                   reinterpret_cast<const sockaddr*>(address_.data()),
                   static_cast<socklen_t>(address_.size()));
}

void service_manager::start_watchdog(
    std::function<bool(std::chrono::milliseconds within)> answers) {
    if (fd_ < 0 || watchdog_.count() == 0 || watchdog_thread_.joinable()) return;
    const auto every = std::chrono::duration_cast<std::chrono::milliseconds>(watchdog_ / 2);
    watchdog_thread_ = std::thread([this, every, answers = std::move(answers)] {
        core::name_this_thread("buzzer-watchdog");
        std::unique_lock lock(mutex_);
        while (!stopping_) {
            lock.unlock();
            // A loop that does not answer within the interval gets no WATCHDOG=1 for it:
            // the manager then acts on its own timeout.
            const auto started = std::chrono::steady_clock::now();
            if (answers(every)) notify("WATCHDOG=1");
            lock.lock();
            wake_.wait_until(lock, started + every, [this] { return stopping_; });
        }
    });
}

void service_manager::stop_watchdog() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    if (watchdog_thread_.joinable()) watchdog_thread_.join();
}

}  // namespace buzzer::runtime
