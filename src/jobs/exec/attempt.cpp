// The exec executor: per attempt, a command in its own process group, the input JSON on its
// stdin, JSON Lines (progress, result, result_file) on its stdout, the tail of its stderr in the
// error. The attempt ties together starting the command (spawn), its group (process_group) and
// what its output means (protocol). Everything waits on Asio: pipes and a pidfd, never a
// blocking wait on an I/O thread; what may take long on the disk or in the kernel (a result
// file, scans of /proc) runs on threads of its own.
#include <algorithm>
#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/cancellation_state.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/json/value.hpp>
#include <chrono>
#include <cmath>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/run_on.hpp"
#include "jobs/exec/process_group.hpp"
#include "jobs/exec/protocol.hpp"
#include "jobs/exec/spawn.hpp"
#include "jobs/executors.hpp"

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

/// Threads for what the attempt must not do on its I/O thread because it may block (reading a
/// result file, scanning /proc for its group). They live as long as the process.
asio::any_io_executor blocking_work() {
    static asio::thread_pool pool(2);
    return pool.get_executor();
}

/// A result file read on blocking_work(): its bytes, or why it could not be read.
struct file_content {
    std::string body;
    std::exception_ptr error;
};

/// One attempt of an exec kind: the command, its pipes, and what it said.
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
          stop_(ex) {
        stop_.expires_at(clock::time_point::max());
    }
    exec_attempt(const exec_attempt&) = delete;
    exec_attempt& operator=(const exec_attempt&) = delete;

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
    asio::awaitable<void> drain(asio::posix::stream_descriptor& pipe);
    asio::awaitable<void> drain_until_stopped();
    void close_pipes();
    void request_stop(bool kill_now);
    asio::awaitable<json::value> finish();

    const exec_spec& spec_;
    job& job_;
    asio::any_io_executor ex_;
    asio::posix::stream_descriptor stdin_, stdout_, stderr_, report_;
    /// Declared after the pipes, so destroyed before them: a command still running when the
    /// attempt is destroyed is killed first.
    std::optional<exec::process_group> group_;
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
    exec::command_line cmd = exec::make_command(spec_, job_);
    exec::started_command c = co_await exec::start_command(std::move(cmd));
    group_.emplace(ex_, blocking_work(), c.pid);
    auto adopt = [](asio::posix::stream_descriptor& d, exec::unique_fd& fd) {
        d.assign(fd.get());
        fd.release();
    };
    adopt(stdin_, c.stdin_write);
    adopt(stdout_, c.stdout_read);
    adopt(stderr_, c.stderr_read);
    adopt(report_, c.report_read);
}

asio::awaitable<json::value> exec_attempt::run() {
    auto before = co_await asio::this_coro::cancellation_state;
    if (before.cancelled() != asio::cancellation_type::none)
        throw boost::system::system_error(asio::error::operation_aborted);
    exec::ignore_sigpipe();
    input_ = job_.input_text();
    input_ += '\n';

    std::exception_ptr failure;
    try {
        co_await spawn();
        co_await check_exec();
        // Output and exit together; the stop timer ends it early (output limit, failed report).
        co_await (pump() || watch_exit() || stop_.async_wait(tuple_awaitable));
        if (!group_->reaped() && !stop_requested_) co_await group_->wait_exit();
    } catch (...) {
        failure = std::current_exception();
    }

    auto state = co_await asio::this_coro::cancellation_state;
    const bool cancelled = state.cancelled() != asio::cancellation_type::none;
    // Stopping the group is I/O after a cancellation, and it must not be cut short by a second
    // one: it is bounded by kill_grace_s plus the wait after SIGKILL.
    co_await asio::this_coro::reset_cancellation_state(asio::disable_cancellation());
    bool must_stop = group_ && !group_->reaped();
    if (group_ && !must_stop) must_stop = co_await group_->alive();
    if (must_stop) {
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
        co_await (group_->stop(grace) || drain_until_stopped());
    }
    close_pipes();
    co_await asio::this_coro::reset_cancellation_state();

    if (cancelled) throw boost::system::system_error(asio::error::operation_aborted);
    if (failure) std::rethrow_exception(failure);
    if (progress_error_) std::rethrow_exception(progress_error_);
    if (overflow_) throw job_error("output exceeds " + std::to_string(spec_.max_output) + " bytes");
    co_return co_await finish();
}

// The report pipe closes at a successful execve; a child_report on it means the child failed.
asio::awaitable<void> exec_attempt::check_exec() {
    exec::child_report report{};
    auto r =
        co_await asio::async_read(report_, asio::buffer(&report, sizeof report), tuple_awaitable);
    auto ec = std::get<0>(r);
    if (ec == asio::error::operation_aborted) throw boost::system::system_error(ec);
    boost::system::error_code ignored;
    report_.close(ignored);
    if (std::get<1>(r) == sizeof report) throw exec::child_failure(spec_, report);
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
                group_->kill();
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
    co_await group_->wait_exit();
    asio::steady_timer drain(ex_, drain_after_exit);
    co_await drain.async_wait(asio::use_awaitable);
}

asio::awaitable<void> exec_attempt::drain(asio::posix::stream_descriptor& pipe) {
    std::array<char, 4096> sink;
    for (;;) {
        auto r = co_await pipe.async_read_some(asio::buffer(sink), tuple_awaitable);
        if (std::get<0>(r)) co_return;  // end of file, closed or cancelled
    }
}

// Reads the command's output until the group's stop ends (which cancels it); not before,
// since a command may close its output and go on running.
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

asio::awaitable<json::value> exec_attempt::finish() {
    if (group_->status_lost())
        throw job_error(err_.with_stderr("the exit status of " + spec_.argv.front() +
                                         " was lost (is SIGCHLD ignored?)"));
    if (auto failed = exec::exit_failure(group_->status()))
        throw job_error(err_.with_stderr(*failed));
    if (out_.bad_result_file()) throw job_error(std::string(exec::bad_result_file_detail));
    if (!out_.result_file()) {
        if (auto result = out_.take_result())
            job_.set_result(std::move(*result), "application/json");
        co_return nullptr;
    }

    // Up to max_output bytes from a disk that may be slow: not on this thread, which runs
    // other jobs (and, in the server, the event hub, the scheduler and the acceptor). The
    // worker gets copies, so that it shares nothing with the attempt.
    auto read = [ref = *out_.result_file(), cwd = spec_.cwd, max = spec_.max_output] {
        file_content content;
        try {
            content.body = exec::read_result_file(ref, cwd, max);
        } catch (...) {
            content.error = std::current_exception();
        }
        return content;
    };
    file_content content = co_await core::run_on(blocking_work(), std::move(read));
    if (content.error) std::rethrow_exception(content.error);
    // A cancellation that came during the read still wins: no result for a cancelled attempt.
    auto state = co_await asio::this_coro::cancellation_state;
    if (state.cancelled() != asio::cancellation_type::none)
        throw boost::system::system_error(asio::error::operation_aborted);
    job_.set_result(std::move(content.body), out_.result_file()->media_type);
    co_return nullptr;
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
