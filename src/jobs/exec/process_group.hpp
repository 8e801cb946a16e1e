// A command's process group: waiting for its leader (the command) to exit, finding through
// /proc what of the group still runs, stopping it (SIGTERM, a grace, SIGKILL), and the
// registry of the groups that run now, which kill_running_commands signals.
#pragma once

#include <sys/types.h>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <chrono>

namespace buzzer::jobs::exec {

/// Whether the process of the /proc entry `pid` is in group `pgid` and is not a zombie.
bool running_in_group(const char* pid, pid_t pgid);

/// Whether any process of group `pgid` still runs. A group whose members are all zombies
/// (orphans waiting for an init that reaps slowly) has stopped working: it counts as gone.
/// Reads the stat file of every process in /proc: call it off the I/O threads.
bool group_running(pid_t pgid);

/// Whether some process, a zombie perhaps, still has group id `pgid`; one kill(2), no scan.
bool group_exists(pid_t pgid);

/// A started command, leader of a process group of its own (pgid == pid), until it and its
/// group are gone. Its coroutines run on one executor (the attempt's); not thread-safe.
class process_group {
  public:
    using clock = std::chrono::steady_clock;

    /// Takes over the child `leader`, just started; registers its group as running. The
    /// coroutines run on `ex`; the /proc scans on `blocking`.
    process_group(const boost::asio::any_io_executor& ex, boost::asio::any_io_executor blocking,
                  pid_t leader);
    process_group(const process_group&) = delete;
    process_group& operator=(const process_group&) = delete;
    /// Unregisters the group and, if the leader was not reaped, SIGKILLs it: an attempt
    /// destroyed before its end (its io_context went away) must not leave the command running.
    ~process_group();

    /// The leader's pid, which is the group's id.
    [[nodiscard]] pid_t leader() const noexcept { return leader_; }
    /// Whether the leader has been reaped (or someone else reaped it).
    [[nodiscard]] bool reaped() const noexcept { return reaped_; }
    /// The leader's waitpid status; meaningful once reaped() and unless status_lost().
    [[nodiscard]] int status() const noexcept { return status_; }
    /// Whether someone else reaped the leader (SIGCHLD is ignored): its status is unknown.
    [[nodiscard]] bool status_lost() const noexcept { return status_lost_; }

    /// Waits until the leader has exited and reaps it: on its pidfd, or by polling waitpid.
    boost::asio::awaitable<void> wait_exit();
    /// Whether a process of the group still runs; once the leader is reaped, also reaps the
    /// members that are the server's children (a subreaper server adopts orphans).
    boost::asio::awaitable<bool> alive();
    /// SIGKILL to the whole group, at once.
    void kill() noexcept;
    /// SIGTERM (and SIGCONT, for a stopped group), up to `grace` for the group to be gone,
    /// then SIGKILL; returns once the leader is reaped and no process of the group runs, or
    /// after a bounded wait past the SIGKILL (logged).
    boost::asio::awaitable<void> stop(clock::duration grace);

  private:
    boost::asio::awaitable<void> wait_pidfd();
    bool try_reap();
    void reap_members();
    boost::asio::awaitable<bool> wait_gone(clock::time_point deadline);

    boost::asio::any_io_executor ex_;
    boost::asio::any_io_executor blocking_;
    pid_t leader_;
    bool reaped_ = false;
    bool status_lost_ = false;
    int status_ = 0;
    boost::asio::posix::stream_descriptor pidfd_;  ///< closed without pidfd (Linux < 5.3)
    bool pidfd_ready_ = false;
};

}  // namespace buzzer::jobs::exec
