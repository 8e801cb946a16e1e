// The build keeps the modules apart: a source of each module is compiled again with that
// module's own command (from compile_commands.json), with includes it may and may not use.
#define BOOST_TEST_MODULE integration_layering
#include <boost/json.hpp>
#include <boost/test/unit_test.hpp>
#include <fstream>
#include <map>
#include <sstream>

#include "support/process.hpp"

using namespace buzzer::test;
namespace json = boost::json;

namespace {

// The compile command of a source of module `name` (src/<name>/...), split into words.
std::vector<std::string> command_of(const std::string& name) {
    std::ifstream in(BUZZER_COMPILE_COMMANDS);
    std::stringstream text;
    text << in.rdbuf();
    const auto commands = json::parse(text.str());
    for (const auto& e : commands.as_array()) {
        const auto& file = e.at("file").as_string();
        if (std::string_view(file).find("/src/" + name + "/") == std::string_view::npos) continue;
        std::vector<std::string> words;
        std::istringstream split(std::string(e.at("command").as_string()));
        for (std::string w; split >> w;) words.push_back(w);
        return words;
    }
    return {};
}

// Whether `source` compiles (syntax only) with the command of module `name`: its include
// roots and flags, without its object file and its precompiled header.
process_result compile_in(const std::string& name, const std::string& source) {
    auto words = command_of(name);
    BOOST_REQUIRE_MESSAGE(!words.empty(), "no compile command for src/" + name);
    temp_dir dir;
    auto probe = dir.write_file("probe.cpp", source);
    std::vector<std::string> args;
    for (std::size_t i = 1; i < words.size(); ++i) {
        const auto& w = words[i];
        if (w == "-o" || w == "-c" || w == "-include") {
            ++i;  // with its argument
            continue;
        }
        args.push_back(w);
    }
    args.push_back("-fsyntax-only");
    args.push_back(probe.string());
    return run_process(words[0], std::move(args), std::chrono::seconds(120));
}

struct probe {
    std::string module;
    std::string include;
    bool allowed;
};

}  // namespace

BOOST_AUTO_TEST_CASE(each_module_compiles_with_what_it_may_use_and_not_with_the_rest) {
    const std::vector<probe> probes = {
        // What each may use: the check itself works.
        {"jobs", "\"store/store.hpp\"", true},
        {"jobs", "\"http/client.hpp\"", true},
        {"api", "\"jobs/scheduler.hpp\"", true},
        {"store", "<sqlite3.h>", true},
        {"http", "<boost/beast/core/flat_buffer.hpp>", true},
        // The store's backend is the store's alone.
        {"jobs", "\"store/sqlite/queries.hpp\"", false},
        {"api", "\"store/sqlite/connection.hpp\"", false},
        {"runtime", "\"store/sqlite/executor.hpp\"", false},
        // Beast is the HTTP front's, sqlite3.h the backend's.
        {"api", "<boost/beast/core/flat_buffer.hpp>", false},
        {"jobs", "<boost/beast/http/verb.hpp>", false},
        {"api", "<sqlite3.h>", false},
        // No include points up or across.
        {"core", "\"store/store.hpp\"", false},
        {"store", "\"jobs/kinds.hpp\"", false},
        {"jobs", "\"api/context.hpp\"", false},
        {"api", "\"runtime/embedded.hpp\"", false},
        {"sse", "\"http/message.hpp\"", false},
    };
    for (const auto& p : probes) {
        auto r = compile_in(p.module, "#include " + p.include + "\nint probe;\n");
        BOOST_TEST_CONTEXT("src/" << p.module << " including " << p.include) {
            BOOST_TEST(!r.timed_out);
            if (p.allowed)
                BOOST_CHECK_MESSAGE(r.exit_code == 0, r.err);
            else
                BOOST_TEST(r.exit_code != 0);
        }
    }
}
