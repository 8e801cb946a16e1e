#include <sys/wait.h>

#include <boost/json.hpp>
#include <boost/test/unit_test.hpp>
#include <buzzer/server.hpp>
#include <cmath>
#include <filesystem>
#include <limits>
#include <optional>
#include <string>

#include "jobs/exec/protocol.hpp"
#include "support/process.hpp"

using namespace buzzer::jobs;
namespace json = boost::json;

namespace {

// The state after each of `lines` in turn; the progress reports are dropped.
exec::stdout_state after(std::initializer_list<std::string_view> lines) {
    exec::stdout_state s;
    for (auto line : lines) s.take_line(line);
    return s;
}

std::string repeat(std::string_view piece, std::size_t times) {
    std::string out;
    for (std::size_t i = 0; i < times; ++i) out += piece;
    return out;
}

const std::string replacement = "\xEF\xBF\xBD";

// The detail of the job_error that reading `ref` fails with; empty if it does not.
std::string read_failure(const exec::result_file_ref& ref, const std::string& cwd,
                         std::size_t max_output = 1 << 20) {
    try {
        exec::read_result_file(ref, cwd, max_output);
    } catch (const buzzer::job_error& e) {
        return e.what();
    }
    return {};
}

}  // namespace

BOOST_AUTO_TEST_SUITE(exec_protocol)

BOOST_AUTO_TEST_CASE(progress_percent_is_clamped_and_truncated) {
    exec::stdout_state s;
    auto r = s.take_line(R"({"progress": {"percent": 10, "message": "step 1"}})");
    BOOST_TEST_REQUIRE(r.has_value());
    BOOST_TEST(r->percent == 10);
    BOOST_TEST(r->message == "step 1");
    r = s.take_line(R"({"progress": {"percent": 55.7}})");
    BOOST_TEST_REQUIRE(r.has_value());
    BOOST_TEST(r->percent == 55);
    BOOST_TEST(r->message == "");
    r = s.take_line(R"({"progress": {"percent": 250, "message": "too far"}})");
    BOOST_TEST_REQUIRE(r.has_value());
    BOOST_TEST(r->percent == 100);
    r = s.take_line(R"({"progress": {"percent": -3}})");
    BOOST_TEST_REQUIRE(r.has_value());
    BOOST_TEST(r->percent == 0);
    // A progress line is not a result.
    BOOST_TEST(!s.result().has_value());
    BOOST_TEST(!s.result_file().has_value());
}

BOOST_AUTO_TEST_CASE(progress_message_that_is_not_a_string_is_left_out) {
    auto r = exec::parse_progress(json::parse(R"({"percent": 5, "message": 42})"));
    BOOST_TEST_REQUIRE(r.has_value());
    BOOST_TEST(r->percent == 5);
    BOOST_TEST(r->message == "");
}

BOOST_AUTO_TEST_CASE(progress_without_a_finite_number_is_ignored) {
    BOOST_TEST(!exec::parse_progress(json::parse(R"({"message": "no percent"})")));
    BOOST_TEST(!exec::parse_progress(json::parse(R"({"percent": "ten"})")));
    BOOST_TEST(!exec::parse_progress(json::parse(R"({"percent": null})")));
    BOOST_TEST(!exec::parse_progress(json::parse(R"("half")")));
    BOOST_TEST(!exec::parse_progress(json::parse("[50]")));
    json::object o;
    o["percent"] = std::numeric_limits<double>::infinity();
    BOOST_TEST(!exec::parse_progress(o));
    o["percent"] = -std::numeric_limits<double>::infinity();
    BOOST_TEST(!exec::parse_progress(o));
    o["percent"] = std::nan("");
    BOOST_TEST(!exec::parse_progress(o));
    // A number too large for a double is parsed as infinity, on a line too.
    exec::stdout_state s;
    BOOST_TEST(!s.take_line(R"({"progress": {"percent": 1e400}})"));
}

BOOST_AUTO_TEST_CASE(result_is_kept_exactly_as_written) {
    for (std::string text : {"1e400", "12345678901234567890123", "-0", "1.50", R"("caf\u00e9")",
                             R"({"a": [1, 2.0,  {}],"b":null})"}) {
        exec::stdout_state s;
        BOOST_TEST(!s.take_line(R"({"result":   )" + text + "  }"));
        BOOST_TEST_REQUIRE(s.result().has_value());
        BOOST_TEST(*s.result() == text);
    }
}

BOOST_AUTO_TEST_CASE(take_result_moves_the_text_out) {
    auto s = after({R"({"result": [1, 2]})"});
    BOOST_TEST(s.take_result().value_or("") == "[1, 2]");
    BOOST_TEST(!s.result().has_value());
    BOOST_TEST(!s.take_result().has_value());
}

BOOST_AUTO_TEST_CASE(a_line_with_progress_and_a_result_gives_both) {
    exec::stdout_state s;
    auto r = s.take_line(R"({"progress": {"percent": 100, "message": "done"}, "result": true})");
    BOOST_TEST_REQUIRE(r.has_value());
    BOOST_TEST(r->percent == 100);
    BOOST_TEST(s.result().value_or("") == "true");
}

BOOST_AUTO_TEST_CASE(result_file_with_and_without_a_media_type) {
    auto s = after({R"({"result_file": {"path": "out.png", "media_type": "image/png"}})"});
    BOOST_TEST_REQUIRE(s.result_file().has_value());
    BOOST_TEST(s.result_file()->path == "out.png");
    BOOST_TEST(s.result_file()->media_type == "image/png");
    BOOST_TEST(!s.bad_result_file());

    s = after({R"({"result_file": {"path": "/tmp/out.bin"}})"});
    BOOST_TEST_REQUIRE(s.result_file().has_value());
    BOOST_TEST(s.result_file()->path == "/tmp/out.bin");
    BOOST_TEST(s.result_file()->media_type == "application/octet-stream");
}

BOOST_AUTO_TEST_CASE(a_malformed_result_file_is_remembered) {
    for (const char* line : {
             R"({"result_file": "out.png"})",
             R"({"result_file": {}})",
             R"({"result_file": {"path": ""}})",
             R"({"result_file": {"path": 7}})",
             R"({"result_file": {"path": "out.png", "media_type": ""}})",
             R"({"result_file": {"path": "out.png", "media_type": ["image/png"]}})",
             R"({"result_file": null})",
         }) {
        BOOST_TEST_CONTEXT(line) {
            auto s = after({R"({"result": 1})", line});
            BOOST_TEST(s.bad_result_file());
            BOOST_TEST(!s.result_file().has_value());
            // It replaces the result before it, as a good result_file would.
            BOOST_TEST(!s.result().has_value());
        }
    }
}

BOOST_AUTO_TEST_CASE(the_last_of_result_and_result_file_wins_within_a_line) {
    auto s = after({R"({"result": 1, "result_file": {"path": "a"}})"});
    BOOST_TEST(!s.result().has_value());
    BOOST_TEST_REQUIRE(s.result_file().has_value());
    BOOST_TEST(s.result_file()->path == "a");

    s = after({R"({"result_file": {"path": "a"}, "result": 2})"});
    BOOST_TEST(s.result().value_or("") == "2");
    BOOST_TEST(!s.result_file().has_value());

    s = after({R"({"result_file": {"path": 1}, "result": 3})"});
    BOOST_TEST(!s.bad_result_file());
    BOOST_TEST(s.result().value_or("") == "3");
}

BOOST_AUTO_TEST_CASE(the_last_of_result_and_result_file_wins_across_lines) {
    auto s = after({R"({"result": 1})", R"({"result": {"n": 2}})"});
    BOOST_TEST(s.result().value_or("") == R"({"n": 2})");

    s = after({R"({"result": 1})", R"({"result_file": {"path": "a"}})"});
    BOOST_TEST(!s.result().has_value());
    BOOST_TEST(s.result_file().has_value());

    s = after({R"({"result_file": {"path": "a"}})", R"({"result": 2})"});
    BOOST_TEST(s.result().value_or("") == "2");
    BOOST_TEST(!s.result_file().has_value());

    s = after({R"({"result_file": {"path": "a"}})", R"({"result_file": {"path": "b"}})"});
    BOOST_TEST_REQUIRE(s.result_file().has_value());
    BOOST_TEST(s.result_file()->path == "b");

    s = after({R"({"result_file": {}})", R"({"result_file": {"path": "b"}})"});
    BOOST_TEST(!s.bad_result_file());
    BOOST_TEST(s.result_file().has_value());
}

BOOST_AUTO_TEST_CASE(lines_that_are_not_json_objects_change_nothing) {
    for (const char* line :
         {"starting up", "[1, 2]", "42", R"("text")", "", "   ", R"({"result": )",
          "\xFF\xFE binary", R"({"other": 1})", R"({"result": 1} trailing)", "null"}) {
        BOOST_TEST_CONTEXT(line) {
            exec::stdout_state s;
            s.take_line(R"({"result": "kept"})");
            BOOST_TEST(!s.take_line(line));
            BOOST_TEST(s.result().value_or("") == R"("kept")");
            BOOST_TEST(!s.result_file().has_value());
            BOOST_TEST(!s.bad_result_file());
        }
    }
}

BOOST_AUTO_TEST_CASE(lines_are_cut_at_newlines_across_reads) {
    exec::line_splitter lines;
    lines.append("first\nsec");
    BOOST_TEST(lines.next_line().value_or("?") == "first");
    BOOST_TEST(!lines.next_line());
    lines.append("ond\n\nthi");
    BOOST_TEST(lines.next_line().value_or("?") == "second");
    BOOST_TEST(lines.next_line().value_or("?") == "");
    BOOST_TEST(!lines.next_line());
    lines.append("rd");
    BOOST_TEST(!lines.next_line());
    // The last line lacks its newline.
    BOOST_TEST(lines.last_line().value_or("?") == "third");
    BOOST_TEST(!lines.last_line());
}

BOOST_AUTO_TEST_CASE(a_stream_ending_with_a_newline_has_no_last_line) {
    exec::line_splitter lines;
    lines.append("one\ntwo\n");
    BOOST_TEST(lines.next_line().value_or("?") == "one");
    BOOST_TEST(lines.next_line().value_or("?") == "two");
    BOOST_TEST(!lines.next_line());
    BOOST_TEST(!lines.last_line());
}

BOOST_AUTO_TEST_CASE(a_long_line_arrives_in_many_reads) {
    exec::line_splitter lines;
    const std::string line = repeat("0123456789", 10000);
    for (std::size_t i = 0; i < line.size(); i += 777) {
        lines.append(std::string_view(line).substr(i, 777));
        BOOST_TEST_REQUIRE(!lines.next_line());
    }
    lines.append("\n");
    BOOST_TEST(lines.next_line().value_or("") == line);
}

BOOST_AUTO_TEST_CASE(a_result_file_is_read_relative_to_the_working_directory) {
    buzzer::test::temp_dir dir("buzzer-protocol-");
    const std::string bytes("PNG\0\1\2", 6);
    dir.write_file("out.png", bytes);
    BOOST_TEST(exec::read_result_file({"out.png", "image/png"}, dir.path().string(), 6) == bytes);
    // An absolute path does not depend on it.
    BOOST_TEST(exec::read_result_file({(dir / "out.png").string(), ""}, "/nonexistent", 6) ==
               bytes);
    dir.write_file("empty", "");
    BOOST_TEST(exec::read_result_file({"empty", ""}, dir.path().string(), 0) == "");
}

BOOST_AUTO_TEST_CASE(a_result_file_that_cannot_be_had_is_a_clear_error) {
    buzzer::test::temp_dir dir("buzzer-protocol-");
    const std::string cwd = dir.path().string();
    BOOST_TEST(read_failure({"missing.png", ""}, cwd) ==
               "cannot read result_file missing.png: No such file or directory");
    dir.write_file("big", std::string(4097, 'x'));
    BOOST_TEST(read_failure({"big", ""}, cwd, 4096) == "result_file big exceeds 4096 bytes");
    BOOST_TEST(read_failure({"big", ""}, cwd, 4097) == "");
    std::filesystem::create_directory(dir / "sub");
    BOOST_TEST(read_failure({"sub", ""}, cwd) ==
               "result_file sub is a directory, not a regular file");
    BOOST_TEST(read_failure({"/dev/null", ""}, cwd) ==
               "result_file /dev/null is a character device, not a regular file");
}

BOOST_AUTO_TEST_CASE(stderr_is_trimmed_and_follows_the_head) {
    exec::stderr_tail err;
    BOOST_TEST(err.with_stderr("exit status 1") == "exit status 1");
    err.append(" \n\t ");
    BOOST_TEST(err.with_stderr("exit status 1") == "exit status 1");
    err.append("first line\nbad input: url\n");
    BOOST_TEST(err.with_stderr("exit status 3") == "exit status 3: first line\nbad input: url");
}

BOOST_AUTO_TEST_CASE(stderr_keeps_only_its_tail) {
    exec::stderr_tail err;
    const std::string noise = repeat("e", 1000);
    for (int i = 0; i < 20000; ++i) err.append(noise);
    err.append("\nthe real reason\n");
    const std::string what = err.with_stderr("exit status 4");
    BOOST_TEST(what.find("exit status 4: ...") == 0u);
    BOOST_TEST(what.size() <= std::string("exit status 4: ...").size() + exec::stderr_tail_bytes);
    BOOST_TEST(what.size() > exec::stderr_tail_bytes);
    BOOST_TEST(what.substr(what.size() - 16) == "\nthe real reason");
}

BOOST_AUTO_TEST_CASE(a_tail_cut_inside_a_character_starts_at_the_next_one) {
    exec::stderr_tail err;
    // 6000 bytes of a 3-byte character: the last 4096 begin with its third byte.
    err.append(repeat("\xE2\x82\xAC", 2000));
    BOOST_TEST(err.with_stderr("exit status 2") ==
               "exit status 2: ..." + repeat("\xE2\x82\xAC", 1365));
}

BOOST_AUTO_TEST_CASE(stderr_that_is_not_utf8_is_repaired) {
    exec::stderr_tail err;
    err.append("caf\xC3\xA9 \xFF done");
    BOOST_TEST(err.with_stderr("exit status 2") ==
               "exit status 2: caf\xC3\xA9 " + replacement + " done");
}

BOOST_AUTO_TEST_CASE(valid_utf8_replaces_each_bad_byte) {
    BOOST_TEST(exec::valid_utf8("plain ascii") == "plain ascii");
    BOOST_TEST(exec::valid_utf8("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80") ==
               "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80");
    BOOST_TEST(exec::valid_utf8("\xFF") == replacement);
    BOOST_TEST(exec::valid_utf8("a\x80z") == "a" + replacement + "z");
    // Overlong forms, surrogates and code points past U+10FFFF are not valid UTF-8.
    BOOST_TEST(exec::valid_utf8("\xC0\xAF") == repeat(replacement, 2));
    BOOST_TEST(exec::valid_utf8("\xE0\x80\xAF") == repeat(replacement, 3));
    BOOST_TEST(exec::valid_utf8("\xED\xA0\x80") == repeat(replacement, 3));
    BOOST_TEST(exec::valid_utf8("\xF4\x90\x80\x80") == repeat(replacement, 4));
    // A sequence cut short by the end of the text, or by a byte that does not continue it.
    BOOST_TEST(exec::valid_utf8("ok\xE2\x82") == "ok" + repeat(replacement, 2));
    BOOST_TEST(exec::valid_utf8("\xE2(x") == replacement + "(x");
    BOOST_TEST(exec::valid_utf8(std::string("nul\0byte", 8)) == std::string("nul\0byte", 8));
}

BOOST_AUTO_TEST_CASE(exit_status_and_signals_are_named) {
    BOOST_TEST(!exec::exit_failure(W_EXITCODE(0, 0)));
    BOOST_TEST(exec::exit_failure(W_EXITCODE(3, 0)).value_or("") == "exit status 3");
    BOOST_TEST(exec::exit_failure(W_EXITCODE(0, SIGKILL)).value_or("") ==
               "killed by signal SIGKILL (9)");
    BOOST_TEST(exec::signal_name(SIGTERM) == "SIGTERM (15)");
    BOOST_TEST(exec::signal_name(200) == "200");
}

BOOST_AUTO_TEST_SUITE_END()
