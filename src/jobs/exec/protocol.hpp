// The exec protocol: what a command says on stdout (JSON Lines with progress, result and
// result_file members), what of its stderr and its exit goes into an attempt's error, and how
// a result file is read. Pure functions of the bytes, but for read_result_file: no processes,
// no Asio.
#pragma once

#include <boost/json/value.hpp>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace buzzer::jobs::exec {

/// How much of the end of stderr an error detail carries.
inline constexpr std::size_t stderr_tail_bytes = 4096;

/// The error detail of a result_file member that is not of the documented shape.
inline constexpr std::string_view bad_result_file_detail =
    R"(result_file must be {"path": "<file>", "media_type": "<type>"} with strings)";

/// A progress line's report.
struct progress_report {
    int percent = 0;      ///< 0..100
    std::string message;  ///< empty when the line had none
};

/// `{"percent": N, "message": "..."}` with N clamped to 0..100 (and truncated); nothing when
/// percent is missing or not a finite number. A message that is not a string is left out.
std::optional<progress_report> parse_progress(const boost::json::value& p);

/// A result file named on stdout: read after a successful exit.
struct result_file_ref {
    std::string path;        ///< as written: relative to the command's working directory
    std::string media_type;  ///< application/octet-stream unless the line gave one
};

/// Cuts a byte stream into lines; memory grows with the longest line (the caller bounds it).
class line_splitter {
  public:
    /// Adds bytes read from the stream.
    void append(std::string_view bytes);
    /// The next line whose newline has arrived, without the newline.
    std::optional<std::string> next_line();
    /// At the end of the stream: what follows the last newline, if anything does.
    std::optional<std::string> last_line();

  private:
    std::string buffer_;
    std::size_t start_ = 0;    ///< where the next line begins in buffer_
    std::size_t scanned_ = 0;  ///< buffer_ before this holds no newline at or after start_
};

/// What a command said on stdout so far. Of `result` and `result_file`, the last wins, within
/// a line (in key order) as across lines.
class stdout_state {
  public:
    /// Takes one line and returns its progress report, if it has a valid one. A line that is
    /// not a JSON object is ignored, and so are unknown members: a command may log on stdout.
    std::optional<progress_report> take_line(std::string_view line);

    /// The JSON text of the last `result`, exactly as written, if a result_file did not
    /// follow it; the parsed value would turn 1e400 or 12345678901234567890123 into doubles.
    [[nodiscard]] const std::optional<std::string>& result() const noexcept { return result_; }
    /// Moves the result's text out; result() is empty afterwards.
    std::optional<std::string> take_result() noexcept;
    /// The last result_file, if it is what wins and it is well formed.
    [[nodiscard]] const std::optional<result_file_ref>& result_file() const noexcept {
        return result_file_;
    }
    /// Whether what wins is a result_file that is not of the documented shape.
    [[nodiscard]] bool bad_result_file() const noexcept { return bad_result_file_; }

  private:
    void take_result_file(const boost::json::value& f);

    std::optional<std::string> result_;
    std::optional<result_file_ref> result_file_;
    bool bad_result_file_ = false;
};

/// The end of what a command wrote on stderr, in bounded memory however much it writes.
class stderr_tail {
  public:
    /// Adds bytes read from stderr.
    void append(std::string_view bytes);
    /// `head`, then ": " and the last stderr_tail_bytes of stderr (trimmed, valid UTF-8,
    /// "..." in front when cut), if stderr holds more than white space.
    [[nodiscard]] std::string with_stderr(std::string head) const;

  private:
    std::string tail_;
    bool truncated_ = false;  ///< bytes were dropped from the front of tail_
};

/// `s` with each byte that does not start a valid UTF-8 sequence replaced by U+FFFD, so that
/// an error detail stays valid JSON text (no overlong forms, surrogates or code points past
/// U+10FFFF).
std::string valid_utf8(std::string_view s);

/// "SIGTERM (15)"; the number alone for a signal without a name.
std::string signal_name(int sig);

/// The content of the result file `ref` of a command that ran in `cwd` (empty: the server's
/// directory). Throws job_error when it cannot be opened or read, is not a regular file (a
/// FIFO nobody writes to would block the reader forever) or holds more than `max_output`
/// bytes. Blocks on the disk: call it off the I/O threads.
std::string read_result_file(const result_file_ref& ref, const std::string& cwd,
                             std::size_t max_output);

/// Why a command whose waitpid status is `wait_status` failed ("exit status 3", "killed by
/// signal SIGKILL (9)"); nothing when it exited with 0.
std::optional<std::string> exit_failure(int wait_status);

}  // namespace buzzer::jobs::exec
