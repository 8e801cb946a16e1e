// The service manager's readiness protocol (systemd's sd_notify): states sent as datagrams of
// `KEY=value` lines to the socket that $NOTIFY_SOCKET names. Without $NOTIFY_SOCKET every
// call does nothing. Written here rather than linked from libsystemd: the protocol is a few
// lines, and a self-contained static build cannot link libsystemd.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace buzzer::runtime {

class service_manager {
  public:
    /// Reads $NOTIFY_SOCKET (a path, or `@name` in the abstract namespace) and the watchdog's
    /// $WATCHDOG_USEC (when $WATCHDOG_PID is unset or this process), and removes them from
    /// the environment so that the commands jobs run do not speak for this process.
    service_manager();
    ~service_manager();
    service_manager(const service_manager&) = delete;
    service_manager& operator=(const service_manager&) = delete;

    bool enabled() const noexcept { return fd_ >= 0; }

    /// Sends `state` ("READY=1", "STOPPING=1", ...); a manager that is gone is not an error.
    void notify(std::string_view state) const;

    /// How long the manager waits for WATCHDOG=1 before it takes this process for hung; zero
    /// without a watchdog.
    std::chrono::microseconds watchdog_timeout() const noexcept { return watchdog_; }

    /// Sends WATCHDOG=1 at half the watchdog's timeout, each time after `answers` has
    /// returned true: a check that the event loops still run handlers. Until
    /// stop_watchdog(); nothing without a watchdog.
    void start_watchdog(std::function<bool(std::chrono::milliseconds within)> answers);
    void stop_watchdog();

  private:
    int fd_ = -1;
    std::string address_;  // the sockaddr_un, as bytes
    std::chrono::microseconds watchdog_{0};
    std::thread watchdog_thread_;
    std::mutex mutex_;
    std::condition_variable wake_;
    bool stopping_ = false;
};

}  // namespace buzzer::runtime
