// The exec executor: per attempt, a command in its own process group, the input JSON on its
// stdin, JSON Lines (progress, result, result_file) on its stdout, the tail of its stderr in the
// error. Everything waits on Asio: pipes and a pidfd, never a blocking wait on an I/O thread.
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/cancellation_state.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/json.hpp>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <ranges>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_set>
#include <utility>
#include <vector>

#include "core/json_text.hpp"
#include "core/log.hpp"
#include "core/run_on.hpp"
#include "jobs/exec/protocol.hpp"
#include "jobs/executors.hpp"

extern char** environ;

namespace buzzer::jobs {
namespace asio = boost::asio;
namespace json = boost::json;
using namespace asio::experimental::awaitable_operators;

namespace {

using clock = std::chrono::steady_clock;
constexpr auto tuple_awaitable = asio::as_tuple(asio::use_awaitable);

constexpr std::size_t read_chunk = 16384;  ///< one pipe read
/// Output may still be open after the command exits (a background child holds the pipe):
/// it gets this long to finish before the rest of the group is stopped.
constexpr auto drain_after_exit = std::chrono::seconds(1);
/// After SIGKILL, how long to wait for the command and its group before giving up (a process
/// in uninterruptible sleep); the attempt ends anyway and a warning is logged.
constexpr auto kill_wait_limit = std::chrono::seconds(5);
/// PATH used when the environment has none (glibc's execvp default, plus /usr/local/bin).
constexpr std::string_view default_path = "/usr/local/bin:/usr/bin:/bin";

/// What the child failed to do before execve; sent through the report pipe.
enum class child_stage : int { setup = 1, chdir = 2, exec = 3 };

struct child_report {
    int stage = 0;
    int error = 0;
};

std::string errno_text(int err) { return std::generic_category().message(err); }

/// An owned file descriptor.
class unique_fd {
  public:
    unique_fd() = default;
    explicit unique_fd(int fd) noexcept : fd_(fd) {}
    unique_fd(unique_fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    unique_fd& operator=(unique_fd&& o) noexcept {
        reset(std::exchange(o.fd_, -1));
        return *this;
    }
    unique_fd(const unique_fd&) = delete;
    unique_fd& operator=(const unique_fd&) = delete;
    ~unique_fd() { reset(); }

    [[nodiscard]] int get() const noexcept { return fd_; }
    int release() noexcept { return std::exchange(fd_, -1); }
    void reset(int fd = -1) noexcept {
        if (fd_ >= 0) ::close(fd_);
        fd_ = fd;
    }

  private:
    int fd_ = -1;
};

/// Both ends of a pipe: close-on-exec, and numbered 3 or above so that the child's dup2 onto
/// 0..2 never overwrites an end it still needs (the server may run with stdin closed).
struct pipe_ends {
    unique_fd read;
    unique_fd write;
};

bool lift_above_stdio(unique_fd& fd) {
    if (fd.get() >= 3) return true;
    int moved = ::fcntl(fd.get(), F_DUPFD_CLOEXEC, 3);
    if (moved < 0) return false;
    fd.reset(moved);
    return true;
}

/// Creates a pipe; returns the errno on failure.
int make_pipe(pipe_ends& p) {
    std::array<int, 2> fds{};
    if (::pipe2(fds.data(), O_CLOEXEC) != 0) return errno;
    p.read.reset(fds[0]);
    p.write.reset(fds[1]);
    if (!lift_above_stdio(p.read) || !lift_above_stdio(p.write)) return errno;
    return 0;
}

// The child's code runs on a stack AddressSanitizer does not know, so it is not instrumented.
#define BUZZER_CHILD_CODE __attribute__((no_sanitize("address", "undefined")))

/// Everything the child needs, prepared before it starts: it makes only async-signal-safe calls.
struct child_plan {
    char* const* argv = nullptr;
    char* const* envp = nullptr;
    char* const* candidates = nullptr;  ///< paths to try with execve, in order; null-terminated
    const char* cwd = nullptr;          ///< null: stay in the server's directory
    int stdin_fd = -1, stdout_fd = -1, stderr_fd = -1;
    int report_fd = -1;  ///< close-on-exec: end of file at exec, a child_report on failure
    pid_t parent = 0;
    int max_fd = 0;  ///< bound of the descriptor-closing loop when close_range is missing
};

/// Whether execvp would go on to the next PATH entry after this execve error.
BUZZER_CHILD_CODE bool keep_searching(int err) {
    return err == ENOENT || err == ENOTDIR || err == ELOOP || err == ENAMETOOLONG ||
           err == ESTALE || err == ENODEV || err == ETIMEDOUT;
}

/// Closes descriptors from..to (inclusive), with close_range or, before Linux 5.9, one by one.
BUZZER_CHILD_CODE void close_fds(unsigned from, unsigned to, int max_fd) noexcept {
    if (from > to) return;
    if (::syscall(SYS_close_range, from, to, 0u) == 0) return;
    for (unsigned fd = from; fd <= to && fd < static_cast<unsigned>(max_fd); ++fd)
        ::close(static_cast<int>(fd));
}

/// Reports what failed in the child to the server, and ends the child.
[[noreturn]] BUZZER_CHILD_CODE void child_failed(int report_fd, child_stage stage) noexcept {
    child_report r{static_cast<int>(stage), errno};
    ssize_t written = ::write(report_fd, &r, sizeof r);
    (void)written;
    ::_exit(127);
}

/// The child until execve. Only async-signal-safe calls: the server is
/// multi-threaded and shares its memory with the child: another thread may hold the
/// allocator's lock.
[[noreturn]] BUZZER_CHILD_CODE void run_child(const child_plan& p) noexcept {
    auto fail = [&p](child_stage stage) { child_failed(p.report_fd, stage); };
    // A group of its own, so that cancellation reaches everything the command starts.
    if (::setpgid(0, 0) != 0) fail(child_stage::setup);
    // Die with the server, even after a kill -9; the server may have died before this call.
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) fail(child_stage::setup);
    if (::getppid() != p.parent) ::_exit(127);
    // Default signal handling: the mask and ignored signals (SIGPIPE) would survive execve.
    // Handlers first: every signal is blocked until then, so none of the server's handlers
    // can run here, in the server's memory.
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    ::sigemptyset(&dfl.sa_mask);
    for (int s = 1; s < NSIG; ++s) ::sigaction(s, &dfl, nullptr);  // fails harmlessly for some
    sigset_t none;
    ::sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);  // NOLINT(concurrency-mt-unsafe): one thread
    if (::dup2(p.stdin_fd, 0) < 0 || ::dup2(p.stdout_fd, 1) < 0 || ::dup2(p.stderr_fd, 2) < 0)
        fail(child_stage::setup);
    if (p.cwd && ::chdir(p.cwd) != 0) fail(child_stage::chdir);
    // Nothing of the server's leaks into the command; the report pipe closes at execve.
    const auto report = static_cast<unsigned>(p.report_fd);
    close_fds(3, report - 1, p.max_fd);
    close_fds(report + 1, ~0u, p.max_fd);
    // Try each candidate as execvp does: EACCES is remembered, a "not here" error moves on.
    int err = ENOENT;
    for (char* const* c = p.candidates; *c; ++c) {
        ::execve(*c, p.argv, p.envp);
        int e = errno;
        if (e == EACCES) {
            err = e;
        } else if (!keep_searching(e)) {
            err = e;
            break;
        }
    }
    errno = err;
    fail(child_stage::exec);
    ::_exit(127);  // unreachable: fail() exits
}

BUZZER_CHILD_CODE int child_entry(void* plan) { run_child(*static_cast<const child_plan*>(plan)); }

/// Starts the child as posix_spawn does: it runs on a stack of its own in the server's memory,
/// and the calling thread waits until its execve (or exit). Unlike fork, no page tables are
/// copied and the server takes no copy-on-write faults afterwards, which costs more than the
/// command itself for short commands. Under ThreadSanitizer, whose runtime cannot follow a
/// task sharing its memory, fork is used. Returns the pid, or -1 with errno.
pid_t start_child(const child_plan& plan) {
#if defined(__SANITIZE_THREAD__)
    pid_t pid = ::fork();
    if (pid == 0) run_child(plan);
    return pid;
#else
    constexpr std::size_t stack_size = 256 * 1024;
    void* stack = ::mmap(nullptr, stack_size, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) return -1;
    // Blocked in the child until it has reset every handler to the default.
    sigset_t all, old;
    ::sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &old);
    pid_t pid = ::clone(child_entry, static_cast<char*>(stack) + stack_size,
                        CLONE_VM | CLONE_VFORK | SIGCHLD, const_cast<child_plan*>(&plan));
    int err = errno;
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    ::munmap(stack, stack_size);
    errno = err;
    return pid;
#endif
}

/// The threads that start children: until the child's execve, clone(CLONE_VFORK) (and fork,
/// for its page tables) holds the thread that calls it, which must not be an I/O thread. They
/// live as long as the process, as PR_SET_PDEATHSIG ties each child to its thread.
asio::any_io_executor spawner() {
    static asio::thread_pool pool(2);
    return pool.get_executor();
}

/// Strings and the pointer arrays execve wants.
struct string_list {
    std::vector<std::string> strings;
    std::vector<char*> pointers;

    char* const* data() {
        pointers.clear();
        for (auto& s : strings) pointers.push_back(s.data());
        pointers.push_back(nullptr);
        return pointers.data();
    }
};

std::string_view env_name(std::string_view entry) { return entry.substr(0, entry.find('=')); }

/// The server's environment, then spec.env, then the BUZZER_ variables; later names win.
std::vector<std::string> build_environment(const exec_spec& spec, const job& j) {
    std::vector<std::pair<std::string, std::string>> added = spec.env;
    added.emplace_back("BUZZER_OPERATION_ID", j.id());
    added.emplace_back("BUZZER_ATTEMPT", std::to_string(j.attempt()));
    std::vector<std::string> out;
    std::unordered_set<std::string_view> taken;  // views into `added` and environ: stable
    // Newest first, so that the first occurrence of a name is the one that wins.
    for (const auto& [name, value] : added | std::views::reverse) {
        if (taken.insert(name).second) out.push_back(name + "=" + value);
    }
    for (char** e = environ; e && *e; ++e) {
        std::string_view entry(*e);
        if (entry.find('=') == std::string_view::npos) continue;
        if (taken.insert(env_name(entry)).second) out.emplace_back(entry);
    }
    return out;
}

/// Where execve should look for argv[0]: itself if it has a '/', else each PATH entry.
std::vector<std::string> exec_candidates(const std::string& program,
                                         const std::vector<std::string>& env) {
    if (program.find('/') != std::string::npos) return {program};
    std::string_view path = default_path;
    for (const auto& e : env) {
        if (env_name(e) == "PATH") {
            path = std::string_view(e).substr(5);
            break;
        }
    }
    std::vector<std::string> out;
    for (;;) {
        auto colon = path.find(':');
        auto dir = path.substr(0, colon);
        // An empty entry is the current directory, as for execvp.
        out.push_back(dir.empty() ? program : std::string(dir) + "/" + program);
        if (colon == std::string_view::npos) break;
        path.remove_prefix(colon + 1);
    }
    return out;
}

/// Writes to a pipe whose reader left must not kill the server: make sure SIGPIPE is ignored
/// (the server ignores it already; an embedding program that did not gets the same behaviour).
void ignore_sigpipe() {
    static std::once_flag once;
    std::call_once(once, [] {
        struct sigaction current {};
        if (::sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL)
            ::signal(SIGPIPE, SIG_IGN);
    });
}

/// Reads /proc/PID/stat: whether the process belongs to `pgid` and is not a zombie.
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

/// Whether any process of the group is still running. A group whose members are all zombies
/// (orphans waiting for an init that reaps slowly) has stopped working: it counts as gone.
bool group_running(pid_t pgid) {
    if (::kill(-pgid, 0) != 0) return errno != ESRCH;  // EPERM: a member we may not signal
    std::unique_ptr<DIR, int (*)(DIR*)> proc(::opendir("/proc"), ::closedir);
    if (!proc) return true;
    // NOLINTNEXTLINE(concurrency-mt-unsafe): readdir on a DIR of our own is safe in glibc.
    while (const dirent* e = ::readdir(proc.get())) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        if (running_in_group(e->d_name, pgid)) return true;
    }
    return false;
}

// The process groups of the commands that run now, for kill_running_commands.
struct live_groups {
    std::mutex mutex;
    std::set<pid_t> groups;
};

live_groups& live() {
    static live_groups l;
    return l;
}

/// One attempt of an exec kind: the child process, its pipes, and what it said.
class exec_attempt {
  public:
    exec_attempt(const exec_spec& spec, job& j, const asio::any_io_executor& ex)
        : spec_(spec),
          job_(j),
          ex_(ex),
          stdin_(ex),
          stdout_(ex),
          stderr_(ex),
          report_(ex),
          pidfd_(ex),
          stop_(ex) {
        stop_.expires_at(clock::time_point::max());
    }
    exec_attempt(const exec_attempt&) = delete;
    exec_attempt& operator=(const exec_attempt&) = delete;

    // A coroutine frame destroyed before completion (its io_context went away) still must not
    // leave the command running.
    ~exec_attempt() {
        if (pid_ <= 0) return;
        {
            std::lock_guard lock(live().mutex);
            live().groups.erase(pid_);
        }
        if (!reaped_) {
            ::kill(-pid_, SIGKILL);
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, WNOHANG);
        }
    }

    /// Runs the command to its end; see make_exec_job.
    asio::awaitable<json::value> run();

  private:
    asio::awaitable<void> spawn();
    asio::awaitable<void> check_exec();
    asio::awaitable<void> pump();
    asio::awaitable<void> feed_stdin();
    asio::awaitable<void> read_stdout();
    asio::awaitable<void> read_stderr();
    asio::awaitable<void> handle_line(std::string line);
    asio::awaitable<void> report_progress(int percent, std::string message);
    asio::awaitable<void> watch_exit();
    asio::awaitable<void> wait_exit();
    asio::awaitable<void> wait_pidfd();
    bool try_reap();
    bool group_alive();
    asio::awaitable<void> stop_group(clock::duration grace);
    asio::awaitable<bool> wait_group_gone(clock::time_point deadline);
    asio::awaitable<void> drain(asio::posix::stream_descriptor& pipe);
    asio::awaitable<void> drain_until_stopped();
    void close_pipes();
    void request_stop(bool kill_now);
    json::value finish();

    const exec_spec& spec_;
    job& job_;
    asio::any_io_executor ex_;
    pid_t pid_ = -1;  ///< the command, leader of its process group (pgid == pid)
    bool reaped_ = false;
    bool status_lost_ = false;  ///< someone else reaped the child (SIGCHLD ignored)
    int status_ = 0;            ///< waitpid status once reaped_
    asio::posix::stream_descriptor stdin_, stdout_, stderr_, report_, pidfd_;
    bool pidfd_ready_ = false;
    asio::steady_timer stop_;  ///< expires (at min) to end the attempt early
    bool stop_requested_ = false;
    bool kill_now_ = false;  ///< skip SIGTERM and the grace
    bool overflow_ = false;
    std::exception_ptr progress_error_;

    std::string input_;
    exec::line_splitter lines_;  ///< stdout not yet ended by a newline
    std::size_t out_total_ = 0;
    exec::stdout_state out_;
    exec::stderr_tail err_;
};

asio::awaitable<void> exec_attempt::spawn() {
    if (spec_.argv.empty() || spec_.argv.front().empty())
        throw job_error("the exec kind has no command (argv is empty)", false);
    const std::string& program = spec_.argv.front();
    auto fail = [&program](const char* what, int err) {
        return job_error("cannot start " + program + ": " + what + ": " + errno_text(err));
    };

    string_list args{spec_.argv, {}};
    string_list env{build_environment(spec_, job_), {}};
    string_list candidates{exec_candidates(program, env.strings), {}};
    child_plan plan;
    plan.argv = args.data();
    plan.envp = env.data();
    plan.candidates = candidates.data();
    plan.cwd = spec_.cwd.empty() ? nullptr : spec_.cwd.c_str();
    plan.parent = ::getpid();
    rlimit files{};
    plan.max_fd = ::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < 65536
                      ? static_cast<int>(files.rlim_cur)
                      : 65536;

    pipe_ends in, out, err, report;
    for (auto* p : {&in, &out, &err, &report}) {
        if (int e = make_pipe(*p)) throw fail("pipe", e);
    }
    plan.stdin_fd = in.read.get();
    plan.stdout_fd = out.write.get();
    plan.stderr_fd = err.write.get();
    plan.report_fd = report.write.get();

    // The plan and the pipes stay in this frame until the child has exec'd or failed.
    // Named: g++ 12 destroys capturing lambda temporaries of a co_await expression twice.
    auto start = [&plan] {
        pid_t started = start_child(plan);
        return std::pair<pid_t, int>{started, started < 0 ? errno : 0};
    };
    const std::pair<pid_t, int> started = co_await core::run_on(spawner(), std::move(start));
    const pid_t pid = started.first;
    if (pid < 0) throw fail("clone", started.second);
    pid_ = pid;
    // Also from here: the group must exist before anything signals it.
    ::setpgid(pid, pid);
    {
        std::lock_guard lock(live().mutex);
        live().groups.insert(pid);
    }

    // The child's ends belong to the child now.
    in.read.reset();
    out.write.reset();
    err.write.reset();
    report.write.reset();

    auto adopt = [](asio::posix::stream_descriptor& d, unique_fd& fd) {
        d.assign(fd.get());
        fd.release();
    };
    adopt(stdin_, in.write);
    adopt(stdout_, out.read);
    adopt(stderr_, err.read);
    adopt(report_, report.read);
    // Without pidfd (Linux < 5.3) the exit is found by polling waitpid.
    unique_fd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
    if (pidfd.get() >= 0) adopt(pidfd_, pidfd);
}

asio::awaitable<json::value> exec_attempt::run() {
    auto before = co_await asio::this_coro::cancellation_state;
    if (before.cancelled() != asio::cancellation_type::none)
        throw boost::system::system_error(asio::error::operation_aborted);
    ignore_sigpipe();
    input_ = job_.input_text();
    input_ += '\n';

    std::exception_ptr failure;
    try {
        co_await spawn();
        co_await check_exec();
        // Output and exit together; the stop timer ends it early (output limit, failed report).
        co_await (pump() || watch_exit() || stop_.async_wait(tuple_awaitable));
        if (!reaped_ && !stop_requested_) co_await wait_exit();
    } catch (...) {
        failure = std::current_exception();
    }

    auto state = co_await asio::this_coro::cancellation_state;
    const bool cancelled = state.cancelled() != asio::cancellation_type::none;
    // Stopping the group is I/O after a cancellation, and it must not be cut short by a second
    // one: it is bounded by kill_grace_s plus kill_wait_limit.
    co_await asio::this_coro::reset_cancellation_state(asio::disable_cancellation());
    if (pid_ > 0 && (!reaped_ || group_alive())) {
        const double grace_s =
            std::isfinite(spec_.kill_grace_s) ? std::clamp(spec_.kill_grace_s, 0.0, 3600.0) : 5.0;
        auto grace = kill_now_ ? clock::duration::zero()
                               : std::chrono::duration_cast<clock::duration>(
                                     std::chrono::duration<double>(grace_s));
        // Its output is still read (and dropped) while it stops: a command that logs on
        // SIGTERM must not die of SIGPIPE before its own clean-up has run.
        boost::system::error_code ignored;
        stdin_.close(ignored);
        report_.close(ignored);
        co_await (stop_group(grace) || drain_until_stopped());
    }
    close_pipes();
    co_await asio::this_coro::reset_cancellation_state();

    if (cancelled) throw boost::system::system_error(asio::error::operation_aborted);
    if (failure) std::rethrow_exception(failure);
    if (progress_error_) std::rethrow_exception(progress_error_);
    if (overflow_) throw job_error("output exceeds " + std::to_string(spec_.max_output) + " bytes");
    co_return finish();
}

// The report pipe closes at a successful execve; a child_report on it means the child failed.
asio::awaitable<void> exec_attempt::check_exec() {
    child_report report{};
    auto r =
        co_await asio::async_read(report_, asio::buffer(&report, sizeof report), tuple_awaitable);
    auto ec = std::get<0>(r);
    if (ec == asio::error::operation_aborted) throw boost::system::system_error(ec);
    boost::system::error_code ignored;
    report_.close(ignored);
    if (std::get<1>(r) != sizeof report) co_return;
    const std::string& program = spec_.argv.front();
    switch (static_cast<child_stage>(report.stage)) {
        case child_stage::exec:
            throw job_error("cannot run " + program + ": " + errno_text(report.error));
        case child_stage::chdir:
            throw job_error("cannot change to directory " + spec_.cwd + ": " +
                            errno_text(report.error));
        default:
            throw job_error("cannot start " + program + ": " + errno_text(report.error));
    }
}

asio::awaitable<void> exec_attempt::pump() {
    co_await (feed_stdin() && read_stdout() && read_stderr());
}

asio::awaitable<void> exec_attempt::feed_stdin() {
    auto r = co_await asio::async_write(stdin_, asio::buffer(input_), tuple_awaitable);
    auto ec = std::get<0>(r);
    if (ec == asio::error::operation_aborted) throw boost::system::system_error(ec);
    // EPIPE or another error: the command does not read its input, which is its right.
    boost::system::error_code ignored;
    stdin_.close(ignored);
}

asio::awaitable<void> exec_attempt::read_stdout() {
    std::vector<char> chunk(read_chunk);
    for (;;) {
        auto r = co_await stdout_.async_read_some(asio::buffer(chunk), tuple_awaitable);
        auto ec = std::get<0>(r);
        std::size_t n = std::get<1>(r);
        if (ec == asio::error::operation_aborted) throw boost::system::system_error(ec);
        if (n > 0) {
            out_total_ += n;
            if (out_total_ > spec_.max_output) {
                // Past the limit nothing more is read: kill now, fail after the cleanup.
                overflow_ = true;
                ::kill(-pid_, SIGKILL);
                request_stop(true);
                co_return;
            }
            lines_.append(std::string_view(chunk.data(), n));
            while (auto line = lines_.next_line()) {
                co_await handle_line(std::move(*line));
                if (stop_requested_) co_return;
            }
        }
        if (ec) break;  // end of file (or a read error): no more output
    }
    // The last line may lack its newline.
    if (auto line = lines_.last_line()) co_await handle_line(std::move(*line));
}

asio::awaitable<void> exec_attempt::read_stderr() {
    std::vector<char> chunk(read_chunk);
    for (;;) {
        auto r = co_await stderr_.async_read_some(asio::buffer(chunk), tuple_awaitable);
        auto ec = std::get<0>(r);
        if (ec == asio::error::operation_aborted) throw boost::system::system_error(ec);
        err_.append(std::string_view(chunk.data(), std::get<1>(r)));
        if (ec) break;
    }
}

// One stdout line; a progress report in it is stored before the next line is read.
asio::awaitable<void> exec_attempt::handle_line(std::string line) {
    auto report = out_.take_line(line);
    if (report) co_await report_progress(report->percent, std::move(report->message));
}

asio::awaitable<void> exec_attempt::report_progress(int percent, std::string message) {
    std::exception_ptr err;
    try {
        co_await job_.progress(percent, std::move(message));
    } catch (...) {
        err = std::current_exception();
    }
    if (!err) co_return;
    auto state = co_await asio::this_coro::cancellation_state;
    if (state.cancelled() != asio::cancellation_type::none) std::rethrow_exception(err);
    // The report could not be stored: the attempt fails with that error, after the cleanup.
    progress_error_ = err;
    request_stop(false);
}

// Waits for the exit; if output is still open then, gives it drain_after_exit to end (pump()
// wins the race when it does).
asio::awaitable<void> exec_attempt::watch_exit() {
    co_await wait_exit();
    asio::steady_timer drain(ex_, drain_after_exit);
    co_await drain.async_wait(asio::use_awaitable);
}

asio::awaitable<void> exec_attempt::wait_exit() {
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
asio::awaitable<void> exec_attempt::wait_pidfd() {
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

bool exec_attempt::try_reap() {
    if (reaped_) return true;
    int status = 0;
    pid_t r;
    do {
        r = ::waitpid(pid_, &status, WNOHANG);
    } while (r < 0 && errno == EINTR);
    if (r == pid_) {
        status_ = status;
        reaped_ = true;
    } else if (r < 0) {
        status_lost_ = true;  // ECHILD: SIGCHLD is ignored, the kernel reaped it
        reaped_ = true;
    }
    return reaped_;
}

bool exec_attempt::group_alive() {
    // Once the leader is reaped, members that are our children (a subreaper server adopts the
    // orphans) are reaped here; the leader's status must not be taken this way.
    auto reap_members = [this] {
        if (!reaped_) return;
        while (::waitpid(-pid_, nullptr, WNOHANG) > 0) {
        }
    };
    reap_members();
    if (group_running(pid_)) return true;
    // Members may have turned into zombies since the first pass: reap those that are ours.
    reap_members();
    return false;
}

// SIGTERM (and SIGCONT, for a stopped group), up to `grace` for the group to be gone, then
// SIGKILL; returns once the command is reaped and no process of the group runs (bounded).
asio::awaitable<void> exec_attempt::stop_group(clock::duration grace) {
    asio::steady_timer timer(ex_);
    if (grace > clock::duration::zero()) {
        const auto deadline = clock::now() + grace;
        ::kill(-pid_, SIGTERM);
        ::kill(-pid_, SIGCONT);
        timer.expires_at(deadline);
        if (!reaped_) co_await (wait_exit() || timer.async_wait(tuple_awaitable));
        bool gone = false;
        if (reaped_) gone = co_await wait_group_gone(deadline);
        if (gone) co_return;
    }
    ::kill(-pid_, SIGKILL);
    const auto limit = clock::now() + kill_wait_limit;
    timer.expires_at(limit);
    if (!reaped_) co_await (wait_exit() || timer.async_wait(tuple_awaitable));
    if (!reaped_) {
        core::log(core::level::warn, "exec: process " + std::to_string(pid_) +
                                         " still runs after SIGKILL; not waiting any longer");
        co_return;
    }
    bool gone = co_await wait_group_gone(limit);
    if (!gone)
        core::log(core::level::warn, "exec: process group " + std::to_string(pid_) +
                                         " still runs after SIGKILL; not waiting any longer");
}

asio::awaitable<bool> exec_attempt::wait_group_gone(clock::time_point deadline) {
    asio::steady_timer timer(ex_);
    auto interval = std::chrono::milliseconds(2);
    for (;;) {
        if (!group_alive()) co_return true;
        const auto now = clock::now();
        if (now >= deadline) co_return false;
        timer.expires_at(std::min<clock::time_point>(deadline, now + interval));
        co_await timer.async_wait(tuple_awaitable);
        interval = std::min(interval * 2, std::chrono::milliseconds(100));
    }
}

asio::awaitable<void> exec_attempt::drain(asio::posix::stream_descriptor& pipe) {
    std::array<char, 4096> sink;
    for (;;) {
        auto r = co_await pipe.async_read_some(asio::buffer(sink), tuple_awaitable);
        if (std::get<0>(r)) co_return;  // end of file, closed or cancelled
    }
}

// Reads the command's output until stop_group ends (which cancels it); not before, since a
// command may close its output and go on running.
asio::awaitable<void> exec_attempt::drain_until_stopped() {
    co_await (drain(stdout_) && drain(stderr_));
    asio::steady_timer forever(ex_, clock::time_point::max());
    co_await forever.async_wait(tuple_awaitable);
}

void exec_attempt::close_pipes() {
    boost::system::error_code ignored;
    for (auto* d : {&stdin_, &stdout_, &stderr_, &report_}) d->close(ignored);
}

void exec_attempt::request_stop(bool kill_now) {
    stop_requested_ = true;
    kill_now_ = kill_now_ || kill_now;
    stop_.expires_at(clock::time_point::min());
}

json::value exec_attempt::finish() {
    if (status_lost_)
        throw job_error(err_.with_stderr("the exit status of " + spec_.argv.front() +
                                         " was lost (is SIGCHLD ignored?)"));
    if (auto failed = exec::exit_failure(status_)) throw job_error(err_.with_stderr(*failed));
    if (out_.bad_result_file()) throw job_error(std::string(exec::bad_result_file_detail));
    if (!out_.result_file()) {
        if (auto result = out_.take_result())
            job_.set_result(std::move(*result), "application/json");
        return nullptr;
    }
    const exec::result_file_ref& ref = *out_.result_file();

    // Relative to the command's working directory.
    std::filesystem::path path(ref.path);
    if (path.is_relative() && !spec_.cwd.empty()) path = std::filesystem::path(spec_.cwd) / path;
    std::error_code ec;
    const auto size = std::filesystem::file_size(path, ec);
    if (ec) throw job_error("cannot read result_file " + ref.path + ": " + ec.message());
    if (size > spec_.max_output)
        throw job_error("result_file " + ref.path + " exceeds " + std::to_string(spec_.max_output) +
                        " bytes");
    std::ifstream file(path, std::ios::binary);
    std::string body(static_cast<std::size_t>(size), '\0');
    if (!file.read(body.data(), static_cast<std::streamsize>(body.size())))
        throw job_error("cannot read result_file " + ref.path);
    job_.set_result(std::move(body), ref.media_type);
    return nullptr;
}

asio::awaitable<json::value> run_exec(std::shared_ptr<const exec_spec> spec, job& j) {
    auto ex = co_await asio::this_coro::executor;
    exec_attempt attempt(*spec, j, ex);
    co_return co_await attempt.run();
}

}  // namespace

job_function make_exec_job(exec_spec spec) {
    auto shared = std::make_shared<const exec_spec>(std::move(spec));
    return [shared](job& j) { return run_exec(shared, j); };
}

}  // namespace buzzer::jobs

namespace buzzer::jobs {

int kill_running_commands() {
    std::lock_guard lock(live().mutex);
    for (pid_t group : live().groups) ::kill(-group, SIGKILL);
    return static_cast<int>(live().groups.size());
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
