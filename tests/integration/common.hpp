// Helpers shared by the integration tests: submitting and following operations.
#pragma once

#include <algorithm>
#include <boost/json.hpp>
#include <boost/test/unit_test.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "support/http_client.hpp"
#include "support/process.hpp"
#include "support/wait.hpp"

namespace buzzer::test {

/// POSTs an operation; requires a 202 and returns its id.
inline std::string submit(http_client& c, const std::string& body, headers extra = {}) {
    auto r = c.post_json("/operations", body, std::move(extra));
    BOOST_TEST_REQUIRE(r.status == 202, "submit " << body << " -> " << r.status << " " << r.body);
    return std::string(r.json().as_object().at("id").as_string());
}

/// The operation's representation, read from the status monitor (with `extra` fields, such
/// as a credential).
inline boost::json::object status_of(http_client& c, const std::string& id, headers extra = {}) {
    auto r = c.get("/operations/" + id + "/status", std::move(extra));
    BOOST_TEST_REQUIRE((r.status == 200 || r.status == 303),
                       "status " << r.status << " " << r.body);
    return r.json().as_object();
}

/// Waits until the operation has `status`; returns its last representation.
inline boost::json::object wait_for_status(
    http_client& c, const std::string& id, std::string_view status,
    std::chrono::milliseconds deadline = std::chrono::seconds(20), const headers& extra = {}) {
    boost::json::object last;
    bool ok = wait_until(
        [&] {
            last = status_of(c, id, extra);
            return last.at("status").as_string() == status;
        },
        deadline);
    BOOST_TEST_REQUIRE(ok, "operation " << id << " did not become " << status << ": "
                                        << boost::json::serialize(last));
    return last;
}

/// Waits until the operation has reported progress (its job is running and under way).
inline void wait_for_progress(http_client& c, const std::string& id,
                              std::chrono::milliseconds deadline = std::chrono::seconds(10)) {
    bool ok = wait_until([&] { return !status_of(c, id).at("progress").is_null(); }, deadline);
    BOOST_TEST_REQUIRE(ok, "operation " << id << " reported no progress");
}

/// Writes, in `dir`, a configuration file with the exec kind `stubborn`: a command that
/// ignores SIGTERM, reports progress once and runs until it is killed. Returns the file.
inline std::filesystem::path write_stubborn_kind(temp_dir& dir) {
    auto script = dir.write_file("stubborn.sh", R"(trap '' TERM
echo '{"progress": {"percent": 1, "message": "up"}}'
while :; do sleep 0.05; done
)");
    return dir.write_file("buzzer.json", R"({"kinds": {"stubborn": {"exec": {
        "argv": ["/bin/sh", ")" + script.string() +
                                             R"("]}}}})");
}

/// The number of threads of process `pid` (from /proc), or -1 if it has none.
inline int threads_of(pid_t pid) {
    std::ifstream status("/proc/" + std::to_string(pid) + "/status");
    for (std::string line; std::getline(status, line);)
        if (line.starts_with("Threads:")) return std::stoi(line.substr(8));
    return -1;
}

/// Whether the servers of this run write with SQLite's `--synchronous normal` (no fdatasync;
/// PostgreSQL ignores the flag).
inline bool synchronous_normal() {
    return !store_is_postgres() && server_arg_of_the_run("--synchronous") == "normal";
}

/// Checks that `server` runs with the flags of the run (server_args_of_the_run): they are on
/// its command line, and they act. With `--synchronous normal` a durable write makes no
/// fdatasync, otherwise it makes one; with `--threads N` it has two threads fewer than a
/// server started with `--threads N+2`.
inline void check_flags_of_the_run(server_process& server) {
    auto const flags = server_args_of_the_run();
    std::string shown;
    for (const auto& f : flags) shown += " " + f;
    BOOST_TEST_MESSAGE("flags of the run:" << (shown.empty() ? " none" : shown));
    std::ifstream file("/proc/" + std::to_string(server.pid()) + "/cmdline", std::ios::binary);
    std::vector<std::string> cmdline;
    for (std::string word; std::getline(file, word, '\0');) cmdline.push_back(word);
    bool const given =
        std::search(cmdline.begin(), cmdline.end(), flags.begin(), flags.end()) != cmdline.end();
    BOOST_TEST(given, "the server's command line lacks the flags of the run");

    http_client c(server.port());
    auto id = submit(c, R"({"kind":"echo","input":"the flags of the run"})");
    wait_for_status(c, id, "succeeded");
    auto const syncs = metric(c, "buzzer_store_sync_seconds_count");
    if (synchronous_normal())
        BOOST_TEST(syncs == 0);
    else
        BOOST_TEST(syncs >= 1);

    if (auto n = server_arg_of_the_run("--threads")) {
        server_process more{
            server_options{.args = {"--threads", std::to_string(std::stoi(*n) + 2)}}};
        bool const two_more =
            wait_until([&] { return threads_of(more.pid()) == threads_of(server.pid()) + 2; },
                       std::chrono::seconds(10));
        BOOST_TEST(two_more, "threads: " << threads_of(server.pid()) << " with --threads " << *n
                                         << ", " << threads_of(more.pid()) << " with two more");
    }
}

/// The `detail` of a problem body, or "" when there is none.
inline std::string detail_of(const boost::json::object& problem) {
    auto it = problem.find("detail");
    return it == problem.end() || !it->value().is_string() ? std::string()
                                                           : std::string(it->value().as_string());
}

}  // namespace buzzer::test
