// Helpers shared by the integration tests: submitting and following operations.
#pragma once

#include <boost/json.hpp>
#include <boost/test/unit_test.hpp>
#include <chrono>
#include <filesystem>
#include <string>

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

/// The operation's representation, read from the status monitor.
inline boost::json::object status_of(http_client& c, const std::string& id) {
    auto r = c.get("/operations/" + id + "/status");
    BOOST_TEST_REQUIRE((r.status == 200 || r.status == 303),
                       "status " << r.status << " " << r.body);
    return r.json().as_object();
}

/// Waits until the operation has `status`; returns its last representation.
inline boost::json::object wait_for_status(
    http_client& c, const std::string& id, std::string_view status,
    std::chrono::milliseconds deadline = std::chrono::seconds(20)) {
    boost::json::object last;
    bool ok = wait_until(
        [&] {
            last = status_of(c, id);
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

/// The `detail` of a problem body, or "" when there is none.
inline std::string detail_of(const boost::json::object& problem) {
    auto it = problem.find("detail");
    return it == problem.end() || !it->value().is_string() ? std::string()
                                                           : std::string(it->value().as_string());
}

}  // namespace buzzer::test
