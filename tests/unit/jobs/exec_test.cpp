#include <fcntl.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>
#include <boost/system/system_error.hpp>
#include <boost/test/unit_test.hpp>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "jobs/executors.hpp"
#include "support/fake_job.hpp"
#include "support/process.hpp"
#include "support/run_coroutine.hpp"
#include "support/wait.hpp"

using namespace buzzer;
namespace asio = boost::asio;
namespace json = boost::json;
using namespace asio::experimental::awaitable_operators;
using clock_type = std::chrono::steady_clock;

namespace {

using test::fake_job;

jobs::exec_spec sh(std::string script) {
    jobs::exec_spec spec;
    spec.argv = {"/bin/sh", "-c", std::move(script)};
    return spec;
}

asio::awaitable<json::value> call(job_function fn, fake_job* j) { co_return co_await fn(*j); }

// As the scheduler runs a job: on a strand of a multi-threaded pool.
asio::awaitable<json::value> call_on_strand(job_function fn, fake_job* j) {
    auto ex = co_await asio::this_coro::executor;
    co_return co_await asio::co_spawn(asio::make_strand(ex), call(std::move(fn), j),
                                      asio::use_awaitable);
}

// The result as a client gets it: a `result` line's JSON text is handed over as printed.
json::value run_job(const jobs::exec_spec& spec, fake_job& j) {
    auto fn = jobs::make_exec_job(spec);
    auto returned = test::run_coroutine([&] { return call(fn, &j); });
    if (j.raw_body && j.raw_media_type == "application/json") return json::parse(*j.raw_body);
    return returned;
}

// The job_error an attempt fails with.
std::optional<job_error> failure_of(const jobs::exec_spec& spec, fake_job& j) {
    try {
        run_job(spec, j);
    } catch (const job_error& e) {
        return e;
    }
    return std::nullopt;
}

// Runs the job and cancels it as the scheduler does (a racing wait wins) at its first progress
// report; returns whether the cancellation won, and when it was asked for.
asio::awaitable<bool> cancel_at_first_progress(job_function fn, fake_job* j,
                                               clock_type::time_point* asked) {
    auto ex = co_await asio::this_coro::executor;
    asio::steady_timer cancel(ex, std::chrono::seconds(20));
    j->on_progress = [&cancel, asked] {
        *asked = clock_type::now();
        cancel.cancel();
    };
    auto r = co_await (fn(*j) || cancel.async_wait(asio::as_tuple(asio::use_awaitable)));
    j->on_progress = nullptr;
    co_return r.index() == 1;
}

// "PID1 PID2" from a progress message.
std::pair<pid_t, pid_t> two_pids(const std::string& message) {
    std::istringstream in(message);
    pid_t a = 0, b = 0;
    in >> a >> b;
    return {a, b};
}

double seconds_since(clock_type::time_point t) {
    return std::chrono::duration<double>(clock_type::now() - t).count();
}

// Makes this process adopt orphaned descendants for the scope (as a server could).
struct subreaper_scope {
    subreaper_scope() { BOOST_TEST_REQUIRE(::prctl(PR_SET_CHILD_SUBREAPER, 1) == 0); }
    ~subreaper_scope() { ::prctl(PR_SET_CHILD_SUBREAPER, 0); }
};

// Whether this process may adopt orphans: qemu-user (the arm64 build's tests) refuses
// PR_SET_CHILD_SUBREAPER with EINVAL.
struct subreaper_allowed {
    boost::test_tools::assertion_result operator()(boost::unit_test::test_unit_id) const {
        int was = 0;
        if (::prctl(PR_GET_CHILD_SUBREAPER, &was) == 0 && ::prctl(PR_SET_CHILD_SUBREAPER, was) == 0)
            return true;
        boost::test_tools::assertion_result no(false);
        no.message() << "PR_SET_CHILD_SUBREAPER is refused here";
        return no;
    }
};

// If the attempt is not over within `deadline`, opens `fifo` for writing, which ends an open
// or a read blocked on it: a hang becomes a failed check instead of a test that never ends.
class fifo_watchdog {
  public:
    fifo_watchdog(std::filesystem::path fifo, std::chrono::milliseconds deadline)
        : thread_([this, fifo = std::move(fifo), deadline] {
              if (test::wait_until([this] { return done_.load(); }, deadline)) return;
              fired_ = true;
              test::wait_until(
                  [&] {
                      int fd = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
                      if (fd >= 0) ::close(fd);
                      return done_.load();
                  },
                  std::chrono::seconds(60));
          }) {}
    fifo_watchdog(const fifo_watchdog&) = delete;
    fifo_watchdog& operator=(const fifo_watchdog&) = delete;
    ~fifo_watchdog() { stop(); }

    // Ends the watch; returns whether the deadline passed before.
    bool stop() {
        done_ = true;
        if (thread_.joinable()) thread_.join();
        return fired_;
    }

  private:
    std::atomic<bool> done_{false};
    std::atomic<bool> fired_{false};
    std::thread thread_;
};

// What the calling thread has read with read(2) and its kin so far (rchar in its io file).
std::optional<std::uint64_t> bytes_read_by_this_thread() {
    std::ifstream io("/proc/thread-self/io");
    std::string key;
    std::uint64_t value = 0;
    while (io >> key >> value) {
        if (key == "rchar:") return value;
    }
    return std::nullopt;
}

std::string file_content(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// What one read of the stat file of every process in /proc reads now.
std::uint64_t bytes_of_a_proc_scan() {
    std::uint64_t total = 0;
    std::error_code ec;
    for (std::filesystem::directory_iterator it("/proc", ec), end; !ec && it != end;
         it.increment(ec)) {
        const std::string name = it->path().filename().string();
        if (name.empty() || name[0] < '0' || name[0] > '9') continue;
        total += file_content(it->path() / "stat").size();
    }
    return total;
}

// A child that ignores SIGTERM, with a background grandchild, reporting both pids.
const char* const stubborn_script = R"sh(trap '' TERM
sleep 100 &
until [ "$(cat /proc/$!/comm)" = sleep ]; do :; done
echo "{\"progress\": {\"percent\": 1, \"message\": \"$$ $!\"}}"
wait
)sh";

}  // namespace

BOOST_AUTO_TEST_SUITE(exec_executor)

BOOST_AUTO_TEST_CASE(progress_lines_and_the_last_result) {
    fake_job j;
    auto result = run_job(sh(R"(
echo '{"progress": {"percent": 10, "message": "step 1"}}'
echo '{"progress": {"percent": 55.7}}'
echo '{"progress": {"percent": 250, "message": "too far"}}'
echo '{"result": {"first": true}}'
echo '{"result": {"n": 2}}'
)"),
                          j);
    BOOST_TEST(json::serialize(result) == R"({"n":2})");
    BOOST_TEST_REQUIRE(j.reports.size() == 3u);
    BOOST_TEST(j.reports[0].first == 10);
    BOOST_TEST(j.reports[0].second == "step 1");
    BOOST_TEST(j.reports[1].first == 55);
    BOOST_TEST(j.reports[1].second == "");
    BOOST_TEST(j.reports[2].first == 100);
    BOOST_TEST(j.raw_body.value_or("") == R"({"n": 2})");
    BOOST_TEST(j.results == 1);
}

BOOST_AUTO_TEST_CASE(no_result_line_is_a_null_result) {
    fake_job j;
    BOOST_TEST(run_job(sh("echo working"), j).is_null());
}

BOOST_AUTO_TEST_CASE(stdin_is_the_input) {
    auto input = json::parse(R"({"url": "http://example.com/a.png", "sizes": [1, 2, 3]})");
    fake_job j(input);
    auto result = run_job(sh(R"(in=$(cat); printf '{"result": %s}\n' "$in")"), j);
    BOOST_TEST(result == input);
}

BOOST_AUTO_TEST_CASE(a_command_that_does_not_read_stdin_does_not_block) {
    // Far more than a pipe holds: the write ends with EPIPE, which is fine.
    fake_job j(json::value(std::string(4 << 20, 'x')));
    auto result = run_job(sh(R"(echo '{"result": "ok"}')"), j);
    BOOST_TEST(result == json::value("ok"));
}

BOOST_AUTO_TEST_CASE(environment_has_the_operation_the_attempt_and_spec_env) {
    ::setenv("BUZZER_EXEC_TEST_INHERITED", "from-server", 1);
    ::setenv("BUZZER_EXEC_TEST_REPLACED", "from-server", 1);
    auto spec = sh(R"(printf '{"result": {"id": "%s", "attempt": "%s", "quality": "%s",
        "inherited": "%s", "replaced": "%s"}}\n' "$BUZZER_OPERATION_ID" "$BUZZER_ATTEMPT" \
        "$QUALITY" "$BUZZER_EXEC_TEST_INHERITED" "$BUZZER_EXEC_TEST_REPLACED" | tr -d '\n';
        echo)");
    spec.env = {{"QUALITY", "80"}, {"BUZZER_EXEC_TEST_REPLACED", "from-spec"}};
    fake_job j(nullptr, 2);
    auto result = run_job(spec, j);
    BOOST_TEST(result.at("id") == json::value("01JDB6Q6X8Z3M9J1V7QJ4T2N5K"));
    BOOST_TEST(result.at("attempt") == json::value("2"));
    BOOST_TEST(result.at("quality") == json::value("80"));
    BOOST_TEST(result.at("inherited") == json::value("from-server"));
    BOOST_TEST(result.at("replaced") == json::value("from-spec"));
}

BOOST_AUTO_TEST_CASE(cwd_is_honoured_and_a_relative_program_found_there) {
    test::temp_dir dir("buzzer-exec-");
    auto script =
        dir.write_file("where.sh", "#!/bin/sh\nprintf '{\"result\": \"%s\"}\\n' \"$(pwd)\"\n");
    std::filesystem::permissions(script, std::filesystem::perms::owner_all);
    jobs::exec_spec spec;
    spec.argv = {"./where.sh"};
    spec.cwd = dir.path().string();
    fake_job j;
    auto result = run_job(spec, j);
    BOOST_TEST(std::filesystem::equivalent(std::string(result.as_string()), dir.path()));
}

BOOST_AUTO_TEST_CASE(a_program_name_without_slash_is_searched_in_path) {
    jobs::exec_spec spec;
    spec.argv = {"sh", "-c", R"(echo '{"result": 7}')"};
    fake_job j;
    BOOST_TEST(run_job(spec, j) == json::value(7));
}

BOOST_AUTO_TEST_CASE(result_file_with_a_media_type) {
    test::temp_dir dir("buzzer-exec-");
    auto spec = sh(R"(printf 'PNG\000\001\002' > out.png
echo '{"result": "not this"}'
echo '{"result_file": {"path": "out.png", "media_type": "image/png"}}')");
    spec.cwd = dir.path().string();
    fake_job j;
    auto result = run_job(spec, j);
    BOOST_TEST(result.is_null());
    BOOST_TEST_REQUIRE(j.raw_body.has_value());
    BOOST_TEST(*j.raw_body == std::string("PNG\0\1\2", 6));
    BOOST_TEST(j.raw_media_type == "image/png");
}

BOOST_AUTO_TEST_CASE(a_missing_result_file_fails_the_attempt) {
    test::temp_dir dir("buzzer-exec-");
    auto spec = sh(R"(echo '{"result_file": {"path": "missing.png", "media_type": "image/png"}}')");
    spec.cwd = dir.path().string();
    fake_job j;
    auto e = failure_of(spec, j);
    BOOST_TEST_REQUIRE(e.has_value());
    BOOST_TEST(std::string(e->what()).find("cannot read result_file missing.png") == 0u);
    BOOST_TEST(!j.raw_body);
}

BOOST_AUTO_TEST_CASE(a_result_file_that_is_a_fifo_fails_the_attempt_promptly) {
    // Nothing writes to the FIFO: a reader that opened it as a file would wait forever.
    test::temp_dir dir("buzzer-exec-");
    auto spec = sh(R"(mkfifo out.fifo
echo '{"result_file": {"path": "out.fifo", "media_type": "text/plain"}}')");
    spec.cwd = dir.path().string();
    fake_job j;
    fifo_watchdog watchdog(dir / "out.fifo", std::chrono::seconds(10));
    auto e = failure_of(spec, j);
    BOOST_TEST(!watchdog.stop());
    BOOST_TEST_REQUIRE(e.has_value());
    BOOST_TEST(std::string(e->what()) == "result_file out.fifo is a FIFO, not a regular file");
    BOOST_TEST(!j.raw_body);
}

BOOST_AUTO_TEST_CASE(a_result_file_that_is_a_directory_fails_the_attempt) {
    test::temp_dir dir("buzzer-exec-");
    auto spec = sh(R"(mkdir out.d
echo '{"result_file": {"path": "out.d"}}')");
    spec.cwd = dir.path().string();
    fake_job j;
    auto e = failure_of(spec, j);
    BOOST_TEST_REQUIRE(e.has_value());
    BOOST_TEST(std::string(e->what()) == "result_file out.d is a directory, not a regular file");
    BOOST_TEST(!j.raw_body);
}

BOOST_AUTO_TEST_CASE(a_result_file_larger_than_max_output_fails_the_attempt) {
    test::temp_dir dir("buzzer-exec-");
    auto spec = sh(R"(head -c 5000 /dev/zero > out.bin
echo '{"result_file": {"path": "out.bin"}}')");
    spec.cwd = dir.path().string();
    spec.max_output = 4096;
    fake_job j;
    auto e = failure_of(spec, j);
    BOOST_TEST_REQUIRE(e.has_value());
    BOOST_TEST(std::string(e->what()) == "result_file out.bin exceeds 4096 bytes");
    BOOST_TEST(!j.raw_body);
}

BOOST_AUTO_TEST_CASE(a_large_result_file_is_read_whole) {
    test::temp_dir dir("buzzer-exec-");
    auto spec = sh(R"(head -c 6291456 /dev/urandom > out.bin
echo '{"result_file": {"path": "out.bin", "media_type": "application/x-random"}}')");
    spec.cwd = dir.path().string();
    fake_job j;
    BOOST_TEST(run_job(spec, j).is_null());
    BOOST_TEST_REQUIRE(j.raw_body.has_value());
    BOOST_TEST(j.raw_body->size() == 6291456u);
    BOOST_TEST((*j.raw_body == file_content(dir / "out.bin")));
    BOOST_TEST(j.raw_media_type == "application/x-random");
}

BOOST_AUTO_TEST_CASE(the_io_thread_does_not_read_the_result_file) {
    // run_job runs the attempt's I/O thread here: what this thread reads (its pipes, a little)
    // must not include the 8 MiB of the file, which a slow disk would make a long stall.
    test::temp_dir dir("buzzer-exec-");
    auto spec = sh(R"(head -c 8388608 /dev/zero > out.bin
echo '{"result_file": {"path": "out.bin"}}')");
    spec.cwd = dir.path().string();
    fake_job j;
    const auto before = bytes_read_by_this_thread();
    BOOST_TEST_REQUIRE(before.has_value());
    run_job(spec, j);
    const auto after = bytes_read_by_this_thread();
    BOOST_TEST_REQUIRE(after.has_value());
    BOOST_TEST_REQUIRE(j.raw_body.has_value());
    BOOST_TEST(j.raw_body->size() == 8388608u);
    BOOST_TEST_MESSAGE("bytes read by the I/O thread: " << (*after - *before));
    BOOST_TEST(*after - *before < 1048576u);
}

BOOST_AUTO_TEST_CASE(lines_that_are_not_json_objects_are_ignored) {
    fake_job j;
    auto result = run_job(sh(R"(echo 'starting up'
echo '[1, 2]'
echo '42'
echo '"text"'
echo '{"progress": "half"}'
echo '{"progress": {"percent": "ten"}}'
echo '{"result": '
echo '{"other": 1}'
echo ''
printf '\377\376 binary\n'
printf '{"result": "last line without newline"}')"),
                          j);
    BOOST_TEST(result == json::value("last line without newline"));
    BOOST_TEST(j.reports.empty());
}

BOOST_AUTO_TEST_CASE(a_non_zero_exit_carries_the_stderr_tail) {
    fake_job j;
    auto e = failure_of(sh(R"(echo '{"result": 1}'
echo 'first line' >&2
echo 'bad input: url' >&2
exit 3)"),
                        j);
    BOOST_TEST_REQUIRE(e.has_value());
    BOOST_TEST(std::string(e->what()) == "exit status 3: first line\nbad input: url");
    BOOST_TEST(e->retryable());
}

BOOST_AUTO_TEST_CASE(a_non_zero_exit_without_stderr) {
    fake_job j;
    auto e = failure_of(sh("exit 1"), j);
    BOOST_TEST_REQUIRE(e.has_value());
    BOOST_TEST(std::string(e->what()) == "exit status 1");
}

BOOST_AUTO_TEST_CASE(death_by_a_signal_is_named) {
    fake_job j;
    auto e = failure_of(sh("echo dying >&2; kill -KILL $$"), j);
    BOOST_TEST_REQUIRE(e.has_value());
    BOOST_TEST(std::string(e->what()) == "killed by signal SIGKILL (9): dying");
}

BOOST_AUTO_TEST_CASE(a_command_that_does_not_exist) {
    jobs::exec_spec spec;
    spec.argv = {"./no-such-command", "--fast"};
    fake_job j;
    auto e = failure_of(spec, j);
    BOOST_TEST_REQUIRE(e.has_value());
    BOOST_TEST(std::string(e->what()) == "cannot run ./no-such-command: No such file or directory");

    spec.argv = {"buzzer-no-such-command-on-path"};
    e = failure_of(spec, j);
    BOOST_TEST_REQUIRE(e.has_value());
    BOOST_TEST(std::string(e->what()) ==
               "cannot run buzzer-no-such-command-on-path: No such file or directory");
}

BOOST_AUTO_TEST_CASE(a_file_that_is_not_executable) {
    test::temp_dir dir("buzzer-exec-");
    dir.write_file("data.txt", "not a program\n");
    jobs::exec_spec spec;
    spec.argv = {"./data.txt"};
    spec.cwd = dir.path().string();
    fake_job j;
    auto e = failure_of(spec, j);
    BOOST_TEST_REQUIRE(e.has_value());
    BOOST_TEST(std::string(e->what()) == "cannot run ./data.txt: Permission denied");
}

BOOST_AUTO_TEST_CASE(a_working_directory_that_does_not_exist) {
    auto spec = sh("true");
    spec.cwd = "/nonexistent-buzzer-dir";
    fake_job j;
    auto e = failure_of(spec, j);
    BOOST_TEST_REQUIRE(e.has_value());
    BOOST_TEST(std::string(e->what()) ==
               "cannot change to directory /nonexistent-buzzer-dir: No such file or directory");
}

BOOST_AUTO_TEST_CASE(output_past_max_output_kills_the_group_at_once) {
    // The command ignores SIGTERM: only an immediate SIGKILL ends it within the grace.
    auto spec = sh(R"(trap '' TERM
while :; do echo '{"progress": {"percent": 1, "message": "spam"}}'; done)");
    spec.max_output = 1000;
    spec.kill_grace_s = 30;
    fake_job j;
    auto start = clock_type::now();
    auto e = failure_of(spec, j);
    BOOST_TEST_REQUIRE(e.has_value());
    BOOST_TEST(std::string(e->what()) == "output exceeds 1000 bytes");
    BOOST_TEST(seconds_since(start) < 10.0);
    BOOST_TEST(j.reports.size() < 30u);
}

BOOST_AUTO_TEST_CASE(a_single_line_is_bounded_by_max_output) {
    auto spec = sh("head -c 100000 /dev/zero | tr '\\0' a; sleep 100");
    spec.max_output = 4096;
    fake_job j;
    auto e = failure_of(spec, j);
    BOOST_TEST_REQUIRE(e.has_value());
    BOOST_TEST(std::string(e->what()) == "output exceeds 4096 bytes");
}

BOOST_AUTO_TEST_CASE(huge_stderr_keeps_only_its_tail) {
    fake_job j;
    auto e = failure_of(sh(R"(head -c 20000000 /dev/zero | tr '\0' e >&2
echo >&2
echo 'the real reason' >&2
exit 4)"),
                        j);
    BOOST_TEST_REQUIRE(e.has_value());
    std::string what = e->what();
    BOOST_TEST(what.find("exit status 4: ...") == 0u);
    BOOST_TEST(what.size() <= 4200u);
    BOOST_TEST(what.substr(what.size() - 15) == "the real reason");
}

BOOST_AUTO_TEST_CASE(stderr_tail_is_valid_utf8) {
    fake_job j;
    auto e = failure_of(sh(R"(printf 'caf\303\251 \377 done' >&2; exit 2)"), j);
    BOOST_TEST_REQUIRE(e.has_value());
    BOOST_TEST(std::string(e->what()) == "exit status 2: caf\xC3\xA9 \xEF\xBF\xBD done");
}

BOOST_AUTO_TEST_CASE(no_server_descriptor_leaks_into_the_command) {
    // A descriptor without close-on-exec, as a careless library might leave one.
    int leaked = ::open("/dev/null", O_RDONLY);
    BOOST_TEST_REQUIRE(leaked >= 0);
    BOOST_TEST_REQUIRE(::dup2(leaked, 57) == 57);
    ::close(leaked);
    fake_job j;
    auto result = run_job(sh(R"(fds=""
for f in /proc/$$/fd/*; do fds="$fds ${f##*/}"; done
echo "{\"result\": \"$fds\"}")"),
                          j);
    ::close(57);
    std::string fds(result.as_string());
    BOOST_TEST_MESSAGE("descriptors of the command:" << fds);
    BOOST_TEST(fds.find(" 57") == std::string::npos);
    BOOST_TEST(fds.find(" 0 1") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(the_command_starts_with_default_signal_handling) {
    // The server ignores SIGPIPE; the command must not inherit that.
    ::signal(SIGPIPE, SIG_IGN);
    fake_job j;
    auto result =
        run_job(sh(R"(echo "{\"result\": \"$(grep SigIgn /proc/$$/status | cut -f2)\"}")"), j);
    BOOST_TEST(result == json::value("0000000000000000"));
}

BOOST_AUTO_TEST_CASE(a_background_process_holding_stdout_does_not_hang_the_attempt) {
    fake_job j;
    auto start = clock_type::now();
    auto result = run_job(sh(R"(sleep 100 &
echo "{\"result\": $!}")"),
                          j);
    BOOST_TEST(seconds_since(start) < 5.0);
    BOOST_TEST_REQUIRE(result.is_int64());
    // What the command left behind is stopped with it.
    BOOST_TEST(!test::process_running(static_cast<pid_t>(result.as_int64())));
}

BOOST_AUTO_TEST_CASE(the_io_thread_does_not_scan_proc_while_a_group_stops) {
    // The command exits at once, leaving a process that ignores SIGTERM: the group is watched
    // through /proc for the whole grace, a dozen scans or more, before SIGKILL ends it.
    auto spec = sh(R"sh(sh -c 'trap "" TERM; exec sleep 100' </dev/null >/dev/null 2>&1 &
until [ "$(cat /proc/$!/comm)" = sleep ]; do :; done
echo '{"result": 1}')sh");
    spec.kill_grace_s = 1;
    fake_job j;
    const std::uint64_t one_scan = bytes_of_a_proc_scan();
    BOOST_TEST_MESSAGE("bytes of one /proc scan: " << one_scan);
    const auto before = bytes_read_by_this_thread();
    BOOST_TEST_REQUIRE(before.has_value());
    const auto start = clock_type::now();
    BOOST_TEST(run_job(spec, j) == json::value(1));
    const auto after = bytes_read_by_this_thread();
    BOOST_TEST_REQUIRE(after.has_value());
    BOOST_TEST(seconds_since(start) >= 1.0);  // the grace was waited for
    BOOST_TEST_MESSAGE("bytes read by the I/O thread: " << (*after - *before));
    BOOST_TEST(*after - *before < one_scan);
}

BOOST_AUTO_TEST_CASE(cancel_sigkills_a_group_that_ignores_sigterm_after_the_grace) {
    auto spec = sh(stubborn_script);
    spec.kill_grace_s = 0.5;
    fake_job j;
    clock_type::time_point asked{};
    auto fn = jobs::make_exec_job(spec);
    bool cancelled = test::run_coroutine([&] { return cancel_at_first_progress(fn, &j, &asked); });
    double took = seconds_since(asked);
    BOOST_TEST(cancelled);
    BOOST_TEST_REQUIRE(j.reports.size() == 1u);
    auto [child, grandchild] = two_pids(j.reports[0].second);
    BOOST_TEST_REQUIRE(child > 0);
    BOOST_TEST_REQUIRE(grandchild > 0);
    // SIGTERM was ignored, so only SIGKILL after the grace ended it.
    BOOST_TEST(took >= 0.5);
    BOOST_TEST(took < 5.0);
    // The child is reaped (not even a zombie); the grandchild does not run any more (an
    // orphan's zombie belongs to init).
    BOOST_TEST(test::process_state(child) == 0);
    BOOST_TEST(!test::process_running(grandchild));
}

BOOST_AUTO_TEST_CASE(cancel_of_a_cooperative_command_does_not_wait_for_the_grace) {
    // The pids are reported once the grandchild runs sleep: a SIGTERM that came between fork
    // and exec would be taken by the shell's handler and lost. Short foreground sleeps: dash
    // can miss a trapped signal that arrives just before `wait`.
    auto spec = sh(R"sh(trap 'exit 0' TERM
sleep 100 &
until [ "$(cat /proc/$!/comm)" = sleep ]; do :; done
echo "{\"progress\": {\"percent\": 1, \"message\": \"$$ $!\"}}"
while :; do sleep 0.1; done
)sh");
    spec.kill_grace_s = 30;
    fake_job j;
    clock_type::time_point asked{};
    auto fn = jobs::make_exec_job(spec);
    bool cancelled = test::run_coroutine([&] { return cancel_at_first_progress(fn, &j, &asked); });
    BOOST_TEST(cancelled);
    BOOST_TEST(seconds_since(asked) < 5.0);
    BOOST_TEST_REQUIRE(j.reports.size() == 1u);
    auto [child, grandchild] = two_pids(j.reports[0].second);
    BOOST_TEST(test::process_state(child) == 0);
    BOOST_TEST(!test::process_running(grandchild));
}

BOOST_AUTO_TEST_CASE(cancel_with_a_subreaper_leaves_no_process_of_the_group,
                     *boost::unit_test::precondition(subreaper_allowed{})) {
    // A server that adopts orphans (PR_SET_CHILD_SUBREAPER) gets the grandchild's zombie too,
    // and the attempt reaps it: then the group is gone entirely.
    subreaper_scope adopt;
    auto spec = sh(stubborn_script);
    spec.kill_grace_s = 0.2;
    fake_job j;
    clock_type::time_point asked{};
    auto fn = jobs::make_exec_job(spec);
    bool cancelled = test::run_coroutine([&] { return cancel_at_first_progress(fn, &j, &asked); });
    BOOST_TEST(cancelled);
    BOOST_TEST_REQUIRE(j.reports.size() == 1u);
    auto [child, grandchild] = two_pids(j.reports[0].second);
    BOOST_TEST(test::process_state(child) == 0);
    BOOST_TEST(test::process_state(grandchild) == 0);
    errno = 0;
    BOOST_TEST(::kill(-child, 0) == -1);
    BOOST_TEST(errno == ESRCH);
}

BOOST_AUTO_TEST_CASE(a_timeout_race_that_the_command_wins_returns_its_result) {
    fake_job j;
    auto fn = jobs::make_exec_job(sh(R"(echo '{"result": "fast"}')"));
    auto race = [](job_function fn, fake_job* j) -> asio::awaitable<json::value> {
        auto ex = co_await asio::this_coro::executor;
        asio::steady_timer deadline(ex, std::chrono::seconds(20));
        auto r = co_await (fn(*j) || deadline.async_wait(asio::use_awaitable));
        co_return r.index() == 0 ? std::get<0>(std::move(r)) : json::value("timed out");
    };
    auto result = test::run_coroutine([&] { return race(fn, &j); });
    BOOST_TEST(result.is_null());  // the command's own result, not the timer's
    BOOST_TEST(j.raw_body.value_or("") == R"("fast")");
}

BOOST_AUTO_TEST_CASE(runs_on_a_strand_of_a_thread_pool) {
    fake_job j(json::parse(R"({"n": 3})"));
    auto fn = jobs::make_exec_job(sh(R"(in=$(cat)
for i in 1 2 3; do echo "{\"progress\": {\"percent\": $((i * 33))}}"; echo "noise $i" >&2; done
printf '{"result": %s}\n' "$in")"));
    test::run_coroutine([&] { return call_on_strand(fn, &j); }, 4);
    BOOST_TEST(json::parse(j.raw_body.value_or("")) == json::parse(R"({"n": 3})"));
    BOOST_TEST(j.reports.size() == 3u);
}

BOOST_AUTO_TEST_CASE(a_progress_report_that_fails_stops_the_command_and_fails_the_attempt) {
    auto spec = sh(R"(echo '{"progress": {"percent": 5, "message": "$$"}}'
exec sleep 100)");
    spec.kill_grace_s = 5;
    fake_job j;
    j.progress_fails = true;
    auto start = clock_type::now();
    std::string what;
    try {
        run_job(spec, j);
    } catch (const std::runtime_error& e) {
        what = e.what();
    }
    BOOST_TEST(what == "database is locked");
    BOOST_TEST(seconds_since(start) < 5.0);  // sleep dies of the SIGTERM
    BOOST_TEST_REQUIRE(j.reports.size() == 1u);
}

BOOST_AUTO_TEST_SUITE_END()
