// Buzzer with real third-party clients, driven from CTest: the demo page in Debian's Chromium
// (playwright-core) and the npm `eventsource` package, each a Node script in tests/browser/
// that starts the buzzer binary itself, kills it with SIGKILL mid-stream and restarts it.
//
// Needs node, tests/browser/node_modules (npm ci --prefix tests/browser) and /usr/bin/chromium
// (apt-get install chromium); scripts/test installs them. When any is missing the cases FAIL,
// saying so: a missing client must never look like a pass.
#define BOOST_TEST_MODULE integration_clients
#include <unistd.h>

#include <boost/test/unit_test.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <string>
#include <string_view>

#include "support/process.hpp"

#ifndef BUZZER_BROWSER_TESTS
#error "BUZZER_BROWSER_TESTS (the tests/browser directory) must be defined by the build"
#endif

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

constexpr std::string_view install_hint =
    "run scripts/test, which installs what the client tests need "
    "(Debian's chromium, and npm ci --prefix tests/browser with Node.js >= 20)";

const fs::path browser_dir{BUZZER_BROWSER_TESTS};

// `name` looked up in $PATH (execve needs a path), or empty.
fs::path find_in_path(std::string_view name) {
    const char* path = std::getenv("PATH");
    std::string_view rest =
        path != nullptr && *path != '\0' ? path : "/usr/local/bin:/usr/bin:/bin";
    while (!rest.empty()) {
        auto const colon = rest.find(':');
        auto const dir = rest.substr(0, colon);
        if (!dir.empty()) {
            auto const candidate = fs::path(dir) / name;
            if (::access(candidate.c_str(), X_OK) == 0) return candidate;
        }
        if (colon == std::string_view::npos) break;
        rest.remove_prefix(colon + 1);
    }
    return {};
}

// Fails the case (with the install hint) unless node and the script's npm packages are there.
fs::path require_node(std::initializer_list<std::string_view> packages) {
    auto const node = find_in_path("node");
    BOOST_REQUIRE_MESSAGE(!node.empty(), "node is not on PATH: " << install_hint);
    for (auto const package : packages) {
        auto const dir = browser_dir / "node_modules" / package;
        BOOST_REQUIRE_MESSAGE(fs::exists(dir / "package.json"),
                              dir.string() << " is missing: " << install_hint);
    }
    return node;
}

// Runs `node <script>` with BUZZER_BINARY set, logs its output, and requires exit code 0.
void run_script(const fs::path& node, std::string_view script, std::chrono::milliseconds timeout) {
    auto const path = browser_dir / script;
    BOOST_REQUIRE_MESSAGE(fs::exists(path), path.string() << " is missing");
    auto const binary = buzzer::test::buzzer_binary();
    BOOST_TEST_MESSAGE("running " << node.string() << " " << path.string()
                                  << " with BUZZER_BINARY=" << binary.string());
    auto const started = std::chrono::steady_clock::now();
    auto const result = buzzer::test::run_process(node, {path.string()}, timeout,
                                                  {{"BUZZER_BINARY", binary.string()}});
    auto const took = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - started);
    BOOST_TEST_MESSAGE("--- " << script << " stdout ---\n" << result.out);
    if (!result.err.empty()) BOOST_TEST_MESSAGE("--- " << script << " stderr ---\n" << result.err);
    BOOST_TEST_MESSAGE(script << " exited with " << result.exit_code << " after " << took.count()
                              << " ms");
    BOOST_REQUIRE_MESSAGE(!result.timed_out,
                          script << " did not finish within " << timeout.count() << " ms");
    BOOST_REQUIRE_MESSAGE(result.exit_code == 0,
                          script << " failed with exit code " << result.exit_code
                                 << "; its last lines:\n"
                                 << (result.err.empty() ? result.out : result.err));
}

}  // namespace

BOOST_AUTO_TEST_SUITE(clients)

// Chromium on the demo page: live progress across kill -9 and restart, echo result, cancel.
BOOST_AUTO_TEST_CASE(demo_page_in_chromium) {
    auto const node = require_node({"playwright-core"});
    BOOST_REQUIRE_MESSAGE(::access("/usr/bin/chromium", X_OK) == 0,
                          "/usr/bin/chromium is missing: " << install_hint);
    run_script(node, "demo.mjs", 240s);
}

// The npm eventsource client: resumes with Last-Event-ID across kill -9, stops on 204 and 404.
BOOST_AUTO_TEST_CASE(eventsource_package) {
    auto const node = require_node({"eventsource"});
    run_script(node, "eventsource.mjs", 180s);
}

BOOST_AUTO_TEST_CASE(access_control_in_chromium) {
    auto const node = require_node({"playwright-core"});
    run_script(node, "access.mjs", 180s);
}

BOOST_AUTO_TEST_SUITE_END()
