#include "jobs/exec/spawn.hpp"

#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/thread_pool.hpp>
#include <cerrno>
#include <csignal>
#include <mutex>
#include <ranges>
#include <string_view>
#include <system_error>
#include <unordered_set>
#include <utility>

#include "core/run_on.hpp"

extern char** environ;

namespace buzzer::jobs::exec {
namespace asio = boost::asio;

namespace {

/// PATH used when the environment has none (glibc's execvp default, plus /usr/local/bin).
constexpr std::string_view default_path = "/usr/local/bin:/usr/bin:/bin";

std::string errno_text(int err) { return std::generic_category().message(err); }

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

// Unused under ThreadSanitizer, where start_child forks.
[[maybe_unused]] BUZZER_CHILD_CODE int child_entry(void* plan) {
    run_child(*static_cast<const child_plan*>(plan));
}

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
    constexpr std::size_t stack_size = std::size_t{256} * 1024;
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

}  // namespace

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

void ignore_sigpipe() {
    static std::once_flag once;
    std::call_once(once, [] {
        struct sigaction current {};
        if (::sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL)
            ::signal(SIGPIPE, SIG_IGN);
    });
}

command_line make_command(const exec_spec& spec, const job& j) {
    if (spec.argv.empty() || spec.argv.front().empty())
        throw job_error("the exec kind has no command (argv is empty)", false);
    return {spec.argv, build_environment(spec, j), spec.cwd};
}

asio::awaitable<started_command> start_command(command_line cmd) {
    const std::string& program = cmd.argv.front();
    auto fail = [&program](const char* what, int err) {
        return job_error("cannot start " + program + ": " + what + ": " + errno_text(err));
    };

    string_list args{cmd.argv, {}};
    string_list env{std::move(cmd.env), {}};
    string_list candidates{exec_candidates(program, env.strings), {}};
    child_plan plan;
    plan.argv = args.data();
    plan.envp = env.data();
    plan.candidates = candidates.data();
    plan.cwd = cmd.cwd.empty() ? nullptr : cmd.cwd.c_str();
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
    if (started.first < 0) throw fail("clone", started.second);

    // The child's ends belong to the child now.
    in.read.reset();
    out.write.reset();
    err.write.reset();
    report.write.reset();
    started_command c;
    c.pid = started.first;
    c.stdin_write = std::move(in.write);
    c.stdout_read = std::move(out.read);
    c.stderr_read = std::move(err.read);
    c.report_read = std::move(report.read);
    co_return std::move(c);
}

job_error child_failure(const exec_spec& spec, const child_report& r) {
    const std::string& program = spec.argv.front();
    switch (static_cast<child_stage>(r.stage)) {
        case child_stage::exec:
            return job_error("cannot run " + program + ": " + errno_text(r.error));
        case child_stage::chdir:
            return job_error("cannot change to directory " + spec.cwd + ": " + errno_text(r.error));
        default:
            return job_error("cannot start " + program + ": " + errno_text(r.error));
    }
}

}  // namespace buzzer::jobs::exec
