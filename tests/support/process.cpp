// Temporary directories and the buzzer binary as a child process (fork/execve, pipes, poll).
#include "support/process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <boost/test/framework.hpp>
#include <boost/test/results_collector.hpp>
#include <boost/test/tree/test_unit.hpp>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <system_error>

#include "support/pg_cluster.hpp"
#include "support/wait.hpp"

extern char** environ;

namespace buzzer::test {

namespace {

using namespace std::chrono_literals;

// The marker the server prints once it accepts connections (API.md, "Command line"), and
// the one of a server that speaks HTTPS.
constexpr std::string_view listening_marker = "listening on http://";
constexpr std::string_view listening_marker_tls = "listening on https://";

[[noreturn]] void throw_errno(const char* what) {
    throw std::system_error(errno, std::generic_category(), what);
}

// Writes all of `data` to `fd`, retrying on EINTR and short writes; gives up on other errors.
void write_all(int fd, const char* data, std::size_t size) noexcept {
    while (size > 0) {
        auto const n = ::write(fd, data, size);
        if (n < 0) {
            if (errno == EINTR) continue;
            return;
        }
        data += n;
        size -= static_cast<std::size_t>(n);
    }
}

void close_fd(int& fd) noexcept {
    if (fd >= 0) ::close(fd);
    fd = -1;
}

// Closes a file descriptor at scope exit unless released.
struct fd_guard {
    int fd = -1;
    ~fd_guard() { close_fd(fd); }
    int release() noexcept { return std::exchange(fd, -1); }
};

// Exit code in the shell's convention: the status, or 128 + signal number.
int exit_code(int status) {
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return 255;
}

// The last `max_bytes` bytes of a file, or "" if it cannot be read.
std::string read_tail(const std::filesystem::path& path, std::size_t max_bytes) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return {};
    in.seekg(0, std::ios::end);
    auto const size = static_cast<std::size_t>(in.tellg());
    auto const start = size > max_bytes ? size - max_bytes : 0;
    in.seekg(static_cast<std::streamoff>(start));
    std::string out(size - start, '\0');
    in.read(out.data(), static_cast<std::streamsize>(out.size()));
    out.resize(static_cast<std::size_t>(in.gcount()));
    return out;
}

// Splits "HOST:PORT" or "[V6]:PORT" (anything after the port is ignored) into its parts.
bool parse_host_port(std::string_view text, std::string& host, unsigned short& port) {
    std::string_view port_text;
    if (!text.empty() && text.front() == '[') {
        auto const close = text.find("]:");
        if (close == std::string_view::npos) return false;
        host = std::string(text.substr(1, close - 1));
        port_text = text.substr(close + 2);
    } else {
        auto const colon = text.rfind(':');
        if (colon == std::string_view::npos) return false;
        host = std::string(text.substr(0, colon));
        port_text = text.substr(colon + 1);
    }
    unsigned value = 0;
    auto const [end, ec] =
        std::from_chars(port_text.data(), port_text.data() + port_text.size(), value);
    if (ec != std::errc{} || end == port_text.data() || value == 0 || value > 65535) return false;
    port = static_cast<unsigned short>(value);
    return !host.empty();
}

// True when called inside a Boost.Test case that has already failed.
bool current_test_failed() noexcept {
    try {
        namespace utf = boost::unit_test;
        if (!utf::framework::test_in_progress()) return false;
        auto const id = utf::framework::current_test_case_id();
        if (id == utf::INV_TEST_UNIT_ID) return false;
        return !utf::results_collector.results(id).passed();
    } catch (...) {
        return false;
    }
}

// The child's environment: the test's own (unless `inherit` is false), with `extra` added or
// replacing same-named entries.
std::vector<std::string> child_environment(const environment& extra, bool inherit) {
    std::vector<std::string> env;
    for (char** entry = inherit ? environ : nullptr; entry != nullptr && *entry != nullptr;
         ++entry) {
        std::string_view const kv(*entry);
        auto const name = kv.substr(0, kv.find('='));
        bool overridden = false;
        for (auto const& [key, value] : extra) overridden = overridden || key == name;
        if (!overridden) env.emplace_back(kv);
    }
    for (auto const& [key, value] : extra) env.push_back(key + "=" + value);
    return env;
}

std::vector<char*> c_strings(std::vector<std::string>& strings) {
    std::vector<char*> out;
    out.reserve(strings.size() + 1);
    for (auto& s : strings) out.push_back(s.data());
    out.push_back(nullptr);
    return out;
}

// How a child starts besides its command line: `env` added to the test's environment (or, when
// `inherit_environment` is false, all of it), in `working_directory` unless that is empty.
struct child_setup {
    const environment& env;
    bool inherit_environment = true;
    std::filesystem::path working_directory = {};
};

// Forks and execs `argv` as `setup` says; the child's stdin, stdout and stderr become `in`,
// `out` and `err`. The child dies with the calling thread.
pid_t spawn(std::vector<std::string> argv_strings, const child_setup& setup, int in, int out,
            int err) {
    // Everything the child needs is prepared before fork(): after it, only
    // async-signal-safe calls are allowed (the test process may have other threads).
    auto env_strings = child_environment(setup.env, setup.inherit_environment);
    std::string const cwd = setup.working_directory.string();
    auto argv = c_strings(argv_strings);
    auto envp = c_strings(env_strings);
    rlimit files{};
    int const max_fd = ::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur != RLIM_INFINITY
                           ? static_cast<int>(std::min<rlim_t>(files.rlim_cur, 1 << 20))
                           : 1 << 16;
    pid_t const parent = ::getpid();

    pid_t const pid = ::fork();
    if (pid < 0) throw_errno("fork");
    if (pid > 0) return pid;

    // Child: die with the test, start from default signal handling, wire up 0/1/2.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; ++sig) ::sigaction(sig, &dfl, nullptr);
    sigset_t none;
    ::sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    if (::dup2(in, 0) < 0 || ::dup2(out, 1) < 0 || ::dup2(err, 2) < 0) ::_exit(127);
    if (!cwd.empty() && ::chdir(cwd.c_str()) != 0) {
        constexpr char msg[] = "spawn: chdir failed\n";
        write_all(2, msg, sizeof msg - 1);
        ::_exit(127);
    }
    // Sockets the test holds must not stay open in the child (it would hide their close).
    if (::syscall(SYS_close_range, 3U, ~0U, 0U) != 0) {
        for (int fd = 3; fd < max_fd; ++fd) ::close(fd);
    }
    ::execve(argv[0], argv.data(), envp.data());
    constexpr char msg[] = "spawn: execve failed: ";
    write_all(2, msg, sizeof msg - 1);
    const char* reason = ::strerror(errno);  // not async-signal-safe, but we exit right after
    write_all(2, reason, std::strlen(reason));
    write_all(2, "\n", 1);
    ::_exit(127);
}

// Whether `args` give the flag `name` ("--threads"), as "--threads N" or "--threads=N".
bool gives_flag(const std::vector<std::string>& args, std::string_view name) {
    return std::any_of(args.begin(), args.end(), [name](const std::string& arg) {
        return arg == name ||
               (arg.starts_with(name) && arg.size() > name.size() && arg[name.size()] == '=');
    });
}

// `args` with the flags of the run added, but for those that `args` give themselves. A flag
// starts at a word beginning with "--" and takes the words after it up to the next flag.
std::vector<std::string> with_run_args(std::vector<std::string> args) {
    auto const extra = server_args_of_the_run();
    std::vector<std::string> out = args;
    for (auto it = extra.begin(); it != extra.end();) {
        auto end = std::find_if(it + 1, extra.end(),
                                [](const std::string& word) { return word.starts_with("--"); });
        auto const name = it->substr(0, it->find('='));
        if (!gives_flag(args, name)) out.insert(out.end(), it, end);
        it = end;
    }
    return out;
}

}  // namespace

std::vector<std::string> server_args_of_the_run() {
    std::vector<std::string> words;
    const char* env = std::getenv("BUZZER_TEST_SERVER_ARGS");
    std::istringstream in(env == nullptr ? "" : env);
    for (std::string word; in >> word;) words.push_back(word);
    return words;
}

std::optional<std::string> server_arg_of_the_run(std::string_view flag) {
    auto const words = server_args_of_the_run();
    for (std::size_t i = 0; i < words.size(); ++i) {
        if (words[i] == flag && i + 1 < words.size() && !words[i + 1].starts_with("--"))
            return words[i + 1];
        if (words[i].starts_with(flag) && words[i].size() > flag.size() &&
            words[i][flag.size()] == '=')
            return words[i].substr(flag.size() + 1);
    }
    return std::nullopt;
}

std::filesystem::path buzzer_binary() {
    if (const char* env = std::getenv("BUZZER_TEST_BINARY"); env != nullptr && *env != '\0') {
        return env;
    }
#ifdef BUZZER_BINARY
    return BUZZER_BINARY;
#else
    throw std::runtime_error("buzzer_binary: BUZZER_BINARY was not defined at build time");
#endif
}

process_result run_process(const std::filesystem::path& binary, std::vector<std::string> args,
                           std::chrono::milliseconds timeout, const environment& env) {
    args.insert(args.begin(), binary.string());
    fd_guard null_fd{::open("/dev/null", O_RDONLY | O_CLOEXEC)};
    if (null_fd.fd < 0) throw_errno("open /dev/null");
    int out[2] = {-1, -1};
    int err[2] = {-1, -1};
    if (::pipe2(out, O_CLOEXEC) != 0) throw_errno("pipe2");
    fd_guard out_read{out[0]};
    fd_guard out_write{out[1]};
    if (::pipe2(err, O_CLOEXEC) != 0) throw_errno("pipe2");
    fd_guard err_read{err[0]};
    fd_guard err_write{err[1]};
    pid_t const pid = spawn(std::move(args), {env}, null_fd.fd, out_write.fd, err_write.fd);
    close_fd(out_write.fd);
    close_fd(err_write.fd);

    // Collect both pipes until both reach end of file or the deadline passes.
    process_result result;
    auto const deadline = std::chrono::steady_clock::now() + timeout;
    pollfd fds[2] = {{out_read.fd, POLLIN, 0}, {err_read.fd, POLLIN, 0}};
    std::string* sinks[2] = {&result.out, &result.err};
    while (fds[0].fd >= 0 || fds[1].fd >= 0) {
        auto const left = std::chrono::ceil<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left <= 0ms) {
            result.timed_out = true;
            ::kill(pid, SIGKILL);
            break;
        }
        int const ready = ::poll(fds, 2, static_cast<int>(left.count()));
        if (ready < 0 && errno != EINTR) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, nullptr, 0);
            throw_errno("poll");
        }
        for (int i = 0; i < 2 && ready > 0; ++i) {
            if (fds[i].fd < 0 || fds[i].revents == 0) continue;
            char buf[4096];
            auto const n = ::read(fds[i].fd, buf, sizeof buf);
            if (n > 0) {
                sinks[i]->append(buf, static_cast<std::size_t>(n));
            } else if (n == 0 || errno != EINTR) {
                fds[i].fd = -1;  // poll ignores negative descriptors
            }
        }
    }
    // Both pipes are closed; the process may still be busy (or hung) after closing them.
    int status = 0;
    auto const reaped = [&] {
        pid_t r = 0;
        while ((r = ::waitpid(pid, &status, WNOHANG)) < 0 && errno == EINTR) {
        }
        return r != 0;
    };
    auto const left =
        std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (!wait_until(reaped, std::max(left, 0ms), 5ms)) {
        result.timed_out = true;
        ::kill(pid, SIGKILL);
        while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
    }
    result.exit_code = exit_code(status);
    return result;
}

process_result run_buzzer(std::vector<std::string> args, std::chrono::milliseconds timeout,
                          const environment& env) {
    return run_process(buzzer_binary(), std::move(args), timeout, env);
}

// ---------------------------------------------------------------------------------------------
// temp_dir

temp_dir::temp_dir(std::string_view prefix) {
    std::string pattern = "/tmp/";
    pattern.append(prefix);
    pattern.append("XXXXXX");
    if (::mkdtemp(pattern.data()) == nullptr) throw_errno("mkdtemp");
    path_ = pattern;
}

temp_dir::~temp_dir() {
    if (path_.empty() || keep_) return;
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
}

temp_dir::temp_dir(temp_dir&& other) noexcept
    : path_(std::exchange(other.path_, {})), keep_(other.keep_) {}

temp_dir& temp_dir::operator=(temp_dir&& other) noexcept {
    if (this != &other) {
        if (!path_.empty() && !keep_) {
            std::error_code ec;
            std::filesystem::remove_all(path_, ec);
        }
        path_ = std::exchange(other.path_, {});
        keep_ = other.keep_;
    }
    return *this;
}

std::filesystem::path temp_dir::operator/(std::string_view name) const { return path_ / name; }

std::filesystem::path temp_dir::write_file(std::string_view name, std::string_view content) const {
    auto const file = path_ / name;
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
    out.close();
    if (!out) throw std::runtime_error("temp_dir: cannot write " + file.string());
    return file;
}

// ---------------------------------------------------------------------------------------------
// server_process

server_process::server_process() : server_process(server_options{}) {}

server_process::server_process(std::filesystem::path database)
    : server_process(server_options{.database = std::move(database)}) {}

server_process::server_process(server_options options) : dir_("buzzer-server-") {
    if (const char* keep = std::getenv("BUZZER_TEST_KEEP_LOGS"); keep != nullptr && *keep != '\0') {
        dir_.keep();
    }
    start(std::move(options));
}

server_process::~server_process() {
    if (pid_ > 0 && !status_) {
        ::kill(pid_, SIGKILL);
        reap(true);
    }
    stop_drain();
    // A failed test gets the server's side of the story next to its own.
    if (std::uncaught_exceptions() > 0 || current_test_failed()) {
        try {
            std::cerr << "--- buzzer server log (pid " << pid_ << ", " << log_path_.string()
                      << "), last 8 KiB ---\n"
                      << read_tail(log_path_, 8192) << "\n--- end of server log ---\n";
        } catch (...) {
        }
    }
}

std::filesystem::path default_database(const temp_dir& dir) {
    if (!store_is_postgres()) return dir / "buzzer.db";
    // One database per server of the run, on the cluster the test process shares.
    static int made = 0;
    return fresh_pg_database("server_" + std::to_string(::getpid()) + "_" + std::to_string(++made));
}

bool store_is_postgres() {
    const char* store = std::getenv("BUZZER_TEST_STORE");
    return store && std::string_view(store) == "postgresql";
}

void server_process::start(server_options options) {
    auto const binary = options.binary.empty() ? buzzer_binary() : options.binary;
    database_ = options.database.empty() ? default_database(dir_) : options.database;
    log_path_ = dir_ / "server.log";

    std::vector<std::string> args{"--listen", options.listen, "--database", database_.string()};
    args.insert(args.end(), options.args.begin(), options.args.end());
    if (options.binary.empty() && options.run_args) args = with_run_args(std::move(args));
    args.insert(args.begin(), binary.string());

    fd_guard log_fd{::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644)};
    if (log_fd.fd < 0) throw_errno("open server log");
    fd_guard null_fd{::open("/dev/null", O_RDONLY | O_CLOEXEC)};
    if (null_fd.fd < 0) throw_errno("open /dev/null");
    int out[2] = {-1, -1};
    if (::pipe2(out, O_CLOEXEC) != 0) throw_errno("pipe2");
    fd_guard out_read{out[0]};
    fd_guard out_write{out[1]};
    pid_ = spawn(std::move(args),
                 {options.env, options.inherit_environment, options.working_directory}, null_fd.fd,
                 out_write.fd, log_fd.fd);
    stdout_fd_ = out_read.release();

    // The child has its own copy; ours must go so that its exit reads as end of file.
    close_fd(out_write.fd);
    try {
        fd_guard log_append{::open(log_path_.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC)};
        if (log_append.fd < 0) throw_errno("open server log");

        // Read stdout line by line until the listening line; earlier lines go to the log.
        using clock = std::chrono::steady_clock;
        auto const deadline = clock::now() + options.startup_deadline;
        std::string pending;
        bool found = false;
        while (!found) {
            auto const left = std::chrono::ceil<std::chrono::milliseconds>(deadline - clock::now());
            if (left <= 0ms) {
                throw std::runtime_error(failure_message(
                    "no '" + std::string(listening_marker) + "HOST:PORT' line on stdout within " +
                    std::to_string(options.startup_deadline.count()) +
                    " ms (is stdout flushed after printing it?)"));
            }
            pollfd pfd{stdout_fd_, POLLIN, 0};
            int const ready = ::poll(&pfd, 1, static_cast<int>(left.count()));
            if (ready < 0 && errno != EINTR) throw_errno("poll");
            if (ready <= 0) continue;
            char buf[4096];
            auto const n = ::read(stdout_fd_, buf, sizeof buf);
            if (n < 0) {
                if (errno == EINTR) continue;
                throw_errno("read server stdout");
            }
            if (n == 0) {
                // stdout closed: the server exited (or closed it) before listening.
                wait_until([this] { return reap(false); }, 5s, 10ms);
                std::string what = "closed stdout before printing its listening line";
                if (status_)
                    what = "exited with code " + std::to_string(exit_code(*status_)) +
                           " before printing its listening line";
                throw std::runtime_error(failure_message(what));
            }
            pending.append(buf, static_cast<std::size_t>(n));
            std::size_t line_start = 0;
            for (std::size_t nl;
                 !found && (nl = pending.find('\n', line_start)) != std::string::npos;
                 line_start = nl + 1) {
                std::string_view const line(pending.data() + line_start, nl - line_start);
                auto at = line.find(listening_marker);
                auto marker = listening_marker.size();
                if (at == std::string_view::npos) {
                    at = line.find(listening_marker_tls);
                    marker = listening_marker_tls.size();
                }
                if (at != std::string_view::npos &&
                    parse_host_port(line.substr(at + marker), host_, port_)) {
                    found = true;
                }
            }
            // Lines already handled (and on success everything read so far) go to the log.
            std::size_t const consumed = found ? pending.size() : line_start;
            write_all(log_append.fd, pending.data(), consumed);
            pending.erase(0, consumed);
        }

        // From now on a thread copies stdout to the log so the child never blocks on it.
        int wake[2] = {-1, -1};
        if (::pipe2(wake, O_CLOEXEC) != 0) throw_errno("pipe2");
        wake_read_fd_ = wake[0];
        wake_fd_ = wake[1];
        drain_ =
            std::thread([out_fd = stdout_fd_, wake_fd = wake[0], log_fd = log_append.release()] {
                pollfd fds[2] = {{out_fd, POLLIN, 0}, {wake_fd, POLLIN, 0}};
                char buf[4096];
                for (;;) {
                    if (::poll(fds, 2, -1) < 0) {
                        if (errno == EINTR) continue;
                        break;
                    }
                    if ((fds[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
                        auto const n = ::read(out_fd, buf, sizeof buf);
                        if (n > 0) {
                            write_all(log_fd, buf, static_cast<std::size_t>(n));
                            continue;  // keep draining before looking at the stop request
                        }
                        if (n == 0 || errno != EINTR) break;
                        continue;
                    }
                    if ((fds[1].revents & POLLIN) != 0) break;  // stopped, and nothing left to read
                }
                // The wake pipe stays open until joined: a late stop request must not hit EPIPE.
                ::close(out_fd);
                ::close(log_fd);
            });
        stdout_fd_ = -1;  // owned by the drain thread now
    } catch (...) {
        if (!status_) {
            ::kill(pid_, SIGKILL);
            reap(true);
        }
        close_fd(stdout_fd_);
        throw;
    }
}

bool server_process::reap(bool block) {
    if (status_) return true;
    if (pid_ <= 0) return false;
    for (;;) {
        int status = 0;
        pid_t const r = ::waitpid(pid_, &status, block ? 0 : WNOHANG);
        if (r == pid_) {
            status_ = status;
            break;
        }
        if (r == 0) return false;
        if (errno == EINTR) continue;
        status_ = 255 << 8;  // ECHILD: reaped elsewhere; report exit code 255
        break;
    }
    stop_drain();
    return true;
}

void server_process::stop_drain() noexcept {
    if (wake_fd_ >= 0) write_all(wake_fd_, "x", 1);
    if (drain_.joinable()) drain_.join();
    close_fd(wake_fd_);
    close_fd(wake_read_fd_);
    close_fd(stdout_fd_);
}

std::string server_process::failure_message(std::string_view what) const {
    std::ostringstream out;
    out << "buzzer server (pid " << pid_ << ", database " << database_.string() << "): " << what
        << "\n--- server log " << log_path_.string() << " (last 4 KiB) ---\n"
        << read_tail(log_path_, 4096) << "\n--- end of server log ---";
    return out.str();
}

std::string server_process::base_url() const {
    bool const v6 = host_.find(':') != std::string::npos;
    return "http://" + (v6 ? "[" + host_ + "]" : host_) + ":" + std::to_string(port_);
}

std::string server_process::log_contents(std::size_t max_bytes) const {
    return read_tail(log_path_, max_bytes);
}

bool server_process::running() { return !reap(false); }

void server_process::kill9() {
    if (reap(false)) return;
    ::kill(pid_, SIGKILL);
    reap(true);
}

int server_process::terminate(std::chrono::seconds deadline) {
    if (!reap(false)) {
        ::kill(pid_, SIGTERM);
        if (!wait_until([this] { return reap(false); }, deadline, 10ms)) {
            kill9();
            throw std::runtime_error(failure_message(
                "did not exit within " + std::to_string(deadline.count()) + " s of SIGTERM"));
        }
    }
    return exit_code(*status_);
}

std::optional<int> server_process::wait_exit(std::chrono::milliseconds deadline) {
    if (!wait_until([this] { return reap(false); }, deadline, 10ms)) return std::nullopt;
    return exit_code(*status_);
}

char process_state(pid_t pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
    std::string s;
    std::getline(f, s);
    auto close = s.rfind(')');
    if (close == std::string::npos || close + 2 >= s.size()) return 0;
    return s[close + 2];
}

bool process_running(pid_t pid) {
    char state = process_state(pid);
    return state != 0 && state != 'Z' && state != 'X';
}

}  // namespace buzzer::test
