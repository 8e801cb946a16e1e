#include "jobs/exec/process_group.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "core/log.hpp"
#include "core/run_on.hpp"
#include "jobs/exec/unique_fd.hpp"
#include "jobs/executors.hpp"

namespace buzzer::jobs {
namespace exec {
namespace asio = boost::asio;
using namespace asio::experimental::awaitable_operators;

namespace {

constexpr auto tuple_awaitable = asio::as_tuple(asio::use_awaitable);

/// After SIGKILL, how long to wait for the command and its group before giving up (a process
/// in uninterruptible sleep); the attempt ends anyway and a warning is logged.
constexpr auto kill_wait_limit = std::chrono::seconds(5);

// The process groups of the commands that run now, for kill_running_commands.
struct live_groups {
    std::mutex mutex;
    std::set<pid_t> groups;
};

live_groups& live() {
    static live_groups l;
    return l;
}

}  // namespace

bool running_in_group(const char* pid, pid_t pgid) {
    std::array<char, 64> path{};
    std::snprintf(path.data(), path.size(), "/proc/%s/stat", pid);
    unique_fd fd(::open(path.data(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) return false;
    std::array<char, 512> buf{};
    ssize_t n = ::read(fd.get(), buf.data(), buf.size() - 1);
    if (n <= 0) return false;
    buf[static_cast<std::size_t>(n)] = '\0';
    // "pid (comm) state ppid pgrp ...": comm may hold anything, so parse after its last ')'.
    const char* close = std::strrchr(buf.data(), ')');
    if (!close) return false;
    char state = 0;
    int ppid = 0, pgrp = 0;
    if (std::sscanf(close + 1, " %c %d %d", &state, &ppid, &pgrp) != 3) return false;
    return pgrp == pgid && state != 'Z' && state != 'X';
}

bool group_exists(pid_t pgid) {
    return ::kill(-pgid, 0) == 0 || errno != ESRCH;  // EPERM: a member we may not signal
}

bool group_running(pid_t pgid) {
    if (::kill(-pgid, 0) != 0) return errno != ESRCH;
    std::unique_ptr<DIR, int (*)(DIR*)> proc(::opendir("/proc"), ::closedir);
    if (!proc) return true;
    // NOLINTNEXTLINE(concurrency-mt-unsafe): readdir on a DIR of our own is safe in glibc.
    while (const dirent* e = ::readdir(proc.get())) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        if (running_in_group(e->d_name, pgid)) return true;
    }
    return false;
}

process_group::process_group(const asio::any_io_executor& ex, asio::any_io_executor blocking,
                             pid_t leader)
    : ex_(ex), blocking_(std::move(blocking)), leader_(leader), pidfd_(ex) {
    // Also from here: the group must exist before anything signals it.
    ::setpgid(leader_, leader_);
    {
        std::lock_guard lock(live().mutex);
        live().groups.insert(leader_);
    }
    // Without pidfd (Linux < 5.3) the exit is found by polling waitpid.
    unique_fd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, leader_, 0)));
    if (pidfd.get() >= 0) {
        pidfd_.assign(pidfd.get());
        pidfd.release();
    }
}

process_group::~process_group() {
    {
        std::lock_guard lock(live().mutex);
        live().groups.erase(leader_);
    }
    if (!reaped_) {
        ::kill(-leader_, SIGKILL);
        ::kill(leader_, SIGKILL);
        ::waitpid(leader_, nullptr, WNOHANG);
    }
}

void process_group::kill() noexcept { ::kill(-leader_, SIGKILL); }

asio::awaitable<void> process_group::wait_exit() {
    asio::steady_timer timer(ex_);
    auto interval = std::chrono::milliseconds(5);
    while (!try_reap()) {
        if (pidfd_.is_open()) {
            co_await wait_pidfd();
            if (try_reap()) break;
        }
        timer.expires_after(interval);
        co_await timer.async_wait(asio::use_awaitable);
        interval = std::min(interval * 2, std::chrono::milliseconds(200));
    }
}

// Waits until the pidfd is readable (the child has exited). Asio registers descriptors
// edge-triggered and async_wait does not look at the current state, so an edge that came
// while no wait was queued would be lost: poll once after queuing, and complete the wait
// ourselves (by cancelling it) when the child is already gone.
asio::awaitable<void> process_group::wait_pidfd() {
    pidfd_ready_ = false;
    auto initiate = [this](auto handler) {
        pidfd_.async_wait(asio::posix::descriptor_base::wait_read, std::move(handler));
        pollfd p{pidfd_.native_handle(), POLLIN, 0};
        if (::poll(&p, 1, 0) > 0) {
            pidfd_ready_ = true;
            pidfd_.cancel();
        }
    };
    auto r =
        co_await asio::async_initiate<decltype(tuple_awaitable), void(boost::system::error_code)>(
            initiate, tuple_awaitable);
    auto ec = std::get<0>(r);
    if (!ec || pidfd_ready_) co_return;
    if (ec == asio::error::operation_aborted) throw boost::system::system_error(ec);
    // The pidfd does not work here: fall back to polling.
    boost::system::error_code ignored;
    pidfd_.close(ignored);
}

bool process_group::try_reap() {
    if (reaped_) return true;
    int status = 0;
    pid_t r;
    do {
        r = ::waitpid(leader_, &status, WNOHANG);
    } while (r < 0 && errno == EINTR);
    if (r == leader_) {
        status_ = status;
        reaped_ = true;
    } else if (r < 0) {
        status_lost_ = true;  // ECHILD: SIGCHLD is ignored, the kernel reaped it
        reaped_ = true;
    }
    return reaped_;
}

// Once the leader is reaped, members that are our children (a subreaper server adopts the
// orphans) are reaped here; the leader's status must not be taken this way.
void process_group::reap_members() {
    if (!reaped_) return;
    while (::waitpid(-leader_, nullptr, WNOHANG) > 0) {
    }
}

asio::awaitable<bool> process_group::alive() {
    reap_members();
    // Usually the group is gone by now, which one kill(2) tells. Otherwise the scan reads
    // every process's stat file: a few milliseconds on a busy machine, repeated while a stop
    // waits, so it runs on the blocking executor and this thread goes on with other work.
    bool running = group_exists(leader_);
    if (running) {
        auto scan = [pgid = leader_] { return group_running(pgid); };
        running = co_await core::run_on(blocking_, std::move(scan));
    }
    if (running) co_return true;
    // Members may have turned into zombies since the first pass: reap those that are ours.
    reap_members();
    co_return false;
}

asio::awaitable<void> process_group::stop(clock::duration grace) {
    asio::steady_timer timer(ex_);
    if (grace > clock::duration::zero()) {
        const auto deadline = clock::now() + grace;
        ::kill(-leader_, SIGTERM);
        ::kill(-leader_, SIGCONT);
        timer.expires_at(deadline);
        if (!reaped_) co_await (wait_exit() || timer.async_wait(tuple_awaitable));
        bool gone = false;
        if (reaped_) gone = co_await wait_gone(deadline);
        if (gone) co_return;
    }
    ::kill(-leader_, SIGKILL);
    const auto limit = clock::now() + kill_wait_limit;
    timer.expires_at(limit);
    if (!reaped_) co_await (wait_exit() || timer.async_wait(tuple_awaitable));
    if (!reaped_) {
        core::log(core::level::warn, "exec: process " + std::to_string(leader_) +
                                         " still runs after SIGKILL; not waiting any longer");
        co_return;
    }
    bool gone = co_await wait_gone(limit);
    if (!gone)
        core::log(core::level::warn, "exec: process group " + std::to_string(leader_) +
                                         " still runs after SIGKILL; not waiting any longer");
}

asio::awaitable<bool> process_group::wait_gone(clock::time_point deadline) {
    asio::steady_timer timer(ex_);
    auto interval = std::chrono::milliseconds(2);
    for (;;) {
        const bool running = co_await alive();
        if (!running) co_return true;
        const auto now = clock::now();
        if (now >= deadline) co_return false;
        timer.expires_at(std::min<clock::time_point>(deadline, now + interval));
        co_await timer.async_wait(tuple_awaitable);
        interval = std::min(interval * 2, std::chrono::milliseconds(100));
    }
}

}  // namespace exec

int kill_running_commands() {
    std::lock_guard lock(exec::live().mutex);
    for (pid_t group : exec::live().groups) ::kill(-group, SIGKILL);
    return static_cast<int>(exec::live().groups.size());
}

int end_orphans(const std::vector<std::string>& operation_ids) {
    if (operation_ids.empty()) return 0;
    std::set<std::string, std::less<>> wanted;
    for (const auto& id : operation_ids) wanted.insert("BUZZER_OPERATION_ID=" + id);
    const pid_t self = ::getpid();
    const uid_t uid = ::getuid();
    int killed = 0;
    DIR* proc = ::opendir("/proc");
    if (!proc) return 0;
    // NOLINTNEXTLINE(concurrency-mt-unsafe): readdir on a DIR of our own is safe in glibc.
    while (dirent* entry = ::readdir(proc)) {
        char* end = nullptr;
        long pid = std::strtol(entry->d_name, &end, 10);
        if (*end != '\0' || pid <= 1 || pid == self) continue;
        const std::string dir = std::string("/proc/") + entry->d_name;
        struct stat st {};
        if (::stat(dir.c_str(), &st) != 0 || st.st_uid != uid) continue;
        // The environment as the process was started: NUL-separated NAME=VALUE entries.
        std::ifstream env(dir + "/environ", std::ios::binary);
        bool match = false;
        for (std::string var; !match && std::getline(env, var, '\0');)
            match = wanted.count(var) > 0;
        if (match && ::kill(static_cast<pid_t>(pid), SIGKILL) == 0) ++killed;
    }
    ::closedir(proc);
    return killed;
}

}  // namespace buzzer::jobs
