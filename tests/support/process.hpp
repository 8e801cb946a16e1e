// Temporary directories and the real buzzer binary run as a child process.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace buzzer::test {

// A fresh directory under /tmp (mkdtemp); the whole tree is removed on destruction.
class temp_dir {
  public:
    // Creates /tmp/<prefix>XXXXXX; throws std::system_error on failure.
    explicit temp_dir(std::string_view prefix = "buzzer-test-");
    // Removes the tree unless keep() was called; never throws.
    ~temp_dir();
    temp_dir(temp_dir&& other) noexcept;
    temp_dir& operator=(temp_dir&& other) noexcept;
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;

    // The directory's absolute path.
    [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }
    // The path of `name` inside the directory (nothing is created).
    [[nodiscard]] std::filesystem::path operator/(std::string_view name) const;
    // Writes `content` to the file `name` inside the directory and returns its path.
    std::filesystem::path write_file(std::string_view name, std::string_view content) const;
    // Leaves the tree on disk after destruction (for post-mortem debugging).
    void keep() noexcept { keep_ = true; }

  private:
    std::filesystem::path path_;
    bool keep_ = false;
};

// Extra environment variables for a child process: {name, value}.
using environment = std::vector<std::pair<std::string, std::string>>;

// Whether the run's servers keep their state in PostgreSQL ($BUZZER_TEST_STORE=postgresql).
[[nodiscard]] bool store_is_postgres();

// Where a server keeps its state unless told: "buzzer.db" in `dir`, or with
// store_is_postgres() a new database on the test process's private PostgreSQL cluster.
[[nodiscard]] std::filesystem::path default_database(const temp_dir& dir);

// How to start a server_process; every field has a usable default.
struct server_options {
    // The database file (or URI); empty means default_database() of the process's temp dir.
    std::filesystem::path database = {};
    // The --listen address; pass a former port() to restart on the same port.
    std::string listen = "127.0.0.1:0";
    // Extra command-line arguments appended after --listen and --database.
    std::vector<std::string> args = {};
    // Extra environment variables, added to (or replacing in) the test's environment.
    environment env = {};
    // Whether the server gets the test's environment; when false, `env` is all it gets (as
    // under `env -i`).
    bool inherit_environment = true;
    // The server's working directory; empty means the test's.
    std::filesystem::path working_directory = {};
    // How long to wait for the "listening on http://HOST:PORT" line.
    std::chrono::milliseconds startup_deadline = std::chrono::seconds(20);
    // The executable; empty means $BUZZER_TEST_BINARY if set, else the built BUZZER_BINARY.
    std::filesystem::path binary = {};
    // Whether the flags of $BUZZER_TEST_SERVER_ARGS are added (see server_args_of_the_run);
    // they never are when `binary` is given, which may not understand them.
    bool run_args = true;
};

// The buzzer executable the tests run: $BUZZER_TEST_BINARY if set, else the built one.
[[nodiscard]] std::filesystem::path buzzer_binary();

// The flags of $BUZZER_TEST_SERVER_ARGS, split at white space: what a CTest registration of a
// suite adds to every buzzer server it starts (e.g. "--threads 1" or "--synchronous normal").
// A flag that a test's own `args` also give is left out for that server: the test's wins.
[[nodiscard]] std::vector<std::string> server_args_of_the_run();

// The value that $BUZZER_TEST_SERVER_ARGS gives `flag` ("--threads"), if it gives one.
[[nodiscard]] std::optional<std::string> server_arg_of_the_run(std::string_view flag);

// What a process run to completion did.
struct process_result {
    // The exit code (128 + signal number if killed by a signal).
    int exit_code = -1;
    // Everything it wrote to stdout.
    std::string out;
    // Everything it wrote to stderr.
    std::string err;
    // True if it was killed because it outlived the timeout.
    bool timed_out = false;
};

// Runs `binary` with `args` (stdin from /dev/null) to completion, capturing stdout and stderr;
// SIGKILLs it after `timeout`.
process_result run_process(const std::filesystem::path& binary, std::vector<std::string> args,
                           std::chrono::milliseconds timeout = std::chrono::seconds(20),
                           const environment& env = {});

// Runs the buzzer binary with `args` to completion (for --help and bad-configuration tests).
process_result run_buzzer(std::vector<std::string> args,
                          std::chrono::milliseconds timeout = std::chrono::seconds(20),
                          const environment& env = {});

// The buzzer binary started with fork/execv on a loopback port, killed on destruction.
//
// The child's stderr, and its stdout after the listening line, go to log_path(); the log's
// tail is printed to stderr when the process object dies during a failed test. The child gets
// SIGKILL when the thread that created this object exits (PR_SET_PDEATHSIG), so create it on
// the test's main thread.
class server_process {
  public:
    // Starts a server on a fresh database in its own temp dir.
    server_process();
    // Starts a server on `database` (e.g. to restart on the same file after kill9()).
    explicit server_process(std::filesystem::path database);
    // Starts a server as described by `options`; throws std::runtime_error (with the log's
    // tail) if it exits or does not print its listening line before the deadline.
    explicit server_process(server_options options);
    // Kills (SIGKILL) and reaps the child if it is still running; never throws.
    ~server_process();
    server_process(const server_process&) = delete;
    server_process& operator=(const server_process&) = delete;

    // The TCP port the server printed.
    [[nodiscard]] unsigned short port() const noexcept { return port_; }
    // The host the server printed (normally 127.0.0.1).
    [[nodiscard]] const std::string& host() const noexcept { return host_; }
    // The child's process id.
    [[nodiscard]] pid_t pid() const noexcept { return pid_; }
    // "http://HOST:PORT", no trailing slash.
    [[nodiscard]] std::string base_url() const;
    // The database file the server was started on.
    [[nodiscard]] const std::filesystem::path& database_path() const noexcept { return database_; }
    // The file receiving the child's stderr and its stdout after the listening line.
    [[nodiscard]] const std::filesystem::path& log_path() const noexcept { return log_path_; }
    // The log's current content (at most the last `max_bytes` bytes).
    [[nodiscard]] std::string log_contents(std::size_t max_bytes = 1 << 20) const;

    // True while the child has not exited (reaps it if it has).
    [[nodiscard]] bool running();
    // Sends SIGKILL and reaps the child; a no-op if it already exited.
    void kill9();
    // Sends SIGTERM and waits up to `deadline`; returns the exit code (128 + signal number
    // if killed by a signal); throws std::runtime_error (after SIGKILL) if it did not exit.
    int terminate(std::chrono::seconds deadline = std::chrono::seconds(15));
    // Waits up to `deadline` for the child to exit by itself; returns its exit code as
    // terminate() does, or std::nullopt if it is still running.
    std::optional<int> wait_exit(std::chrono::milliseconds deadline);

  private:
    void start(server_options options);
    bool reap(bool block);
    void stop_drain() noexcept;
    [[nodiscard]] std::string failure_message(std::string_view what) const;

    temp_dir dir_;
    std::filesystem::path database_;
    std::filesystem::path log_path_;
    std::string host_;
    unsigned short port_ = 0;
    pid_t pid_ = -1;
    std::optional<int> status_;  // waitpid status once reaped
    int stdout_fd_ = -1;         // read end of the child's stdout pipe
    int wake_fd_ = -1;           // write end of the pipe that stops the drain thread
    int wake_read_fd_ = -1;      // its read end, watched by the drain thread
    std::thread drain_;          // copies the child's stdout to the log after startup
};

// The state letter of /proc/PID/stat ('R', 'S', 'Z', ...); 0 when there is no such process.
char process_state(pid_t pid);

// Whether the process runs (a zombie does not).
bool process_running(pid_t pid);

}  // namespace buzzer::test
