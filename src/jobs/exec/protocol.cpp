#include "jobs/exec/protocol.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <boost/json/parse.hpp>
#include <buzzer/server.hpp>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <utility>

#include "core/json_text.hpp"
#include "jobs/exec/unique_fd.hpp"

namespace buzzer::jobs::exec {
namespace json = boost::json;

namespace {

std::string errno_text(int err) { return std::generic_category().message(err); }

// What a file that is not a regular one is, for the error detail.
const char* file_kind(mode_t mode) {
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISFIFO(mode)) return "a FIFO";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    if (S_ISSOCK(mode)) return "a socket";
    return "a special file";
}

}  // namespace

std::optional<progress_report> parse_progress(const json::value& p) {
    const json::object* o = p.if_object();
    const json::value* percent = o ? o->if_contains("percent") : nullptr;
    if (!percent || !percent->is_number()) return std::nullopt;
    double d = percent->to_number<double>();
    if (!std::isfinite(d)) return std::nullopt;
    progress_report r;
    r.percent = static_cast<int>(std::clamp(d, 0.0, 100.0));
    if (const json::value* m = o->if_contains("message"); m && m->is_string())
        r.message = std::string(m->get_string());
    return r;
}

void line_splitter::append(std::string_view bytes) { buffer_.append(bytes); }

std::optional<std::string> line_splitter::next_line() {
    std::size_t newline = buffer_.find('\n', std::max(start_, scanned_));
    if (newline == std::string::npos) {
        // Drop the lines handed out; what remains is known to hold no newline.
        buffer_.erase(0, start_);
        start_ = 0;
        scanned_ = buffer_.size();
        return std::nullopt;
    }
    std::string line = buffer_.substr(start_, newline - start_);
    start_ = newline + 1;
    return line;
}

std::optional<std::string> line_splitter::last_line() {
    buffer_.erase(0, start_);
    start_ = 0;
    scanned_ = 0;
    if (buffer_.empty()) return std::nullopt;
    return std::exchange(buffer_, {});
}

std::optional<progress_report> stdout_state::take_line(std::string_view line) {
    boost::system::error_code ec;
    json::value v = json::parse(line, ec, {}, core::json_options());
    if (ec || !v.is_object()) return std::nullopt;
    std::optional<progress_report> report;
    // In key order, so that within a line too the last of result and result_file wins.
    for (const auto& member : v.get_object()) {
        if (member.key() == "progress") {
            if (auto r = parse_progress(member.value())) report = std::move(r);
        } else if (member.key() == "result") {
            // As written: the parsed value would turn 1e400 or long integers into doubles.
            result_ = std::string(core::member_text(line, "result").value());
            result_file_.reset();
            bad_result_file_ = false;
        } else if (member.key() == "result_file") {
            take_result_file(member.value());
        }
    }
    return report;
}

std::optional<std::string> stdout_state::take_result() noexcept {
    std::optional<std::string> r = std::move(result_);
    result_.reset();
    return r;
}

void stdout_state::take_result_file(const json::value& f) {
    // Malformed until shown otherwise: a bad result_file also replaces an earlier result.
    result_.reset();
    result_file_.reset();
    bad_result_file_ = true;
    const json::object* o = f.if_object();
    const json::value* path = o ? o->if_contains("path") : nullptr;
    if (!path || !path->is_string() || path->get_string().empty()) return;
    result_file_ref ref{std::string(path->get_string()), "application/octet-stream"};
    if (const json::value* mt = o->if_contains("media_type")) {
        if (!mt->is_string() || mt->get_string().empty()) return;
        ref.media_type = std::string(mt->get_string());
    }
    result_file_ = std::move(ref);
    bad_result_file_ = false;
}

void stderr_tail::append(std::string_view bytes) {
    tail_.append(bytes);
    // Bounded memory however much the command writes; trimmed in batches, not per read.
    if (tail_.size() > 2 * stderr_tail_bytes) {
        tail_.erase(0, tail_.size() - stderr_tail_bytes);
        truncated_ = true;
    }
}

std::string stderr_tail::with_stderr(std::string head) const {
    std::string_view tail = tail_;
    bool cut = truncated_;
    if (tail.size() > stderr_tail_bytes) {
        tail.remove_prefix(tail.size() - stderr_tail_bytes);
        cut = true;
    }
    // The cut may have split a character: start at the next one.
    if (cut) {
        while (!tail.empty() && (static_cast<unsigned char>(tail.front()) & 0xC0) == 0x80)
            tail.remove_prefix(1);
    }
    auto space = [](char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; };
    while (!tail.empty() && space(tail.front())) tail.remove_prefix(1);
    while (!tail.empty() && space(tail.back())) tail.remove_suffix(1);
    if (tail.empty()) return head;
    return head + ": " + (cut ? "..." : "") + valid_utf8(tail);
}

std::string valid_utf8(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    std::size_t i = 0;
    while (i < s.size()) {
        auto c = static_cast<unsigned char>(s[i]);
        std::size_t len = c < 0x80           ? 1
                          : (c >> 5) == 0x6  ? 2
                          : (c >> 4) == 0xE  ? 3
                          : (c >> 3) == 0x1E ? 4
                                             : 0;
        bool ok = len > 0 && i + len <= s.size();
        char32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
        for (std::size_t k = 1; ok && k < len; ++k) {
            auto cc = static_cast<unsigned char>(s[i + k]);
            ok = (cc & 0xC0) == 0x80;
            cp = (cp << 6) | (cc & 0x3F);
        }
        // No overlong forms, no surrogates, nothing past U+10FFFF.
        static constexpr std::array<char32_t, 5> smallest = {0, 0, 0x80, 0x800, 0x10000};
        if (ok && len > 1)
            ok = cp >= smallest[len] && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
        if (ok) {
            out.append(s.substr(i, len));
            i += len;
        } else {
            out += "\xEF\xBF\xBD";
            ++i;
        }
    }
    return out;
}

std::string signal_name(int sig) {
    const char* abbrev = ::sigabbrev_np(sig);
    if (!abbrev) return std::to_string(sig);
    return std::string("SIG") + abbrev + " (" + std::to_string(sig) + ")";
}

std::string read_result_file(const result_file_ref& ref, const std::string& cwd,
                             std::size_t max_output) {
    auto cannot_read = [&ref](const std::string& why) {
        return job_error("cannot read result_file " + ref.path + ": " + why);
    };
    // Relative to the command's working directory.
    std::filesystem::path path(ref.path);
    if (path.is_relative() && !cwd.empty()) path = std::filesystem::path(cwd) / path;
    // O_NONBLOCK: opening a FIFO would wait for a writer. O_NOCTTY: a terminal must not become
    // the server's. The type and the size are then taken from this descriptor, not the path,
    // so that the file cannot be swapped between the check and the read.
    unique_fd fd(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY));
    if (fd.get() < 0) throw cannot_read(errno_text(errno));
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) throw cannot_read(errno_text(errno));
    if (!S_ISREG(st.st_mode))
        throw job_error("result_file " + ref.path + " is " + file_kind(st.st_mode) +
                        ", not a regular file");
    if (static_cast<std::uintmax_t>(st.st_size) > max_output)
        throw job_error("result_file " + ref.path + " exceeds " + std::to_string(max_output) +
                        " bytes");
    // A regular file: reads may wait for the disk but must not fail with EAGAIN, as some
    // file systems would let them with O_NONBLOCK.
    const int flags = ::fcntl(fd.get(), F_GETFL);
    if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK) != 0)
        throw cannot_read(errno_text(errno));

    std::string body(static_cast<std::size_t>(st.st_size), '\0');
    std::size_t got = 0;
    while (got < body.size()) {
        const ssize_t n = ::read(fd.get(), body.data() + got, body.size() - got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw cannot_read(errno_text(errno));
        if (n == 0)
            throw cannot_read("it ended after " + std::to_string(got) + " of " +
                              std::to_string(body.size()) + " bytes");
        got += static_cast<std::size_t>(n);
    }
    return body;
}

std::optional<std::string> exit_failure(int wait_status) {
    if (WIFSIGNALED(wait_status)) return "killed by signal " + signal_name(WTERMSIG(wait_status));
    const int code = WEXITSTATUS(wait_status);
    if (code != 0) return "exit status " + std::to_string(code);
    return std::nullopt;
}

}  // namespace buzzer::jobs::exec
