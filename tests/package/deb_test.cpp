// The Debian package: made by CPack from this build, installed with dpkg -i, its binary run
// on its configuration, then purged.
#define BOOST_TEST_MODULE package_deb
#include <unistd.h>

#include <boost/test/unit_test.hpp>
#include <string>

#include "integration/common.hpp"

using namespace buzzer::test;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

process_result run(const std::string& program, std::vector<std::string> args) {
    return run_process(program, std::move(args), 120s);
}

bool installed() {
    auto r = run("/usr/bin/dpkg-query", {"-W", "-f=${Status}", "buzzer"});
    return r.exit_code == 0 && r.out.find("installed") != std::string::npos;
}

// Runs only where dpkg may install, and where it would not replace someone's buzzer.
struct may_install {
    boost::test_tools::assertion_result operator()(boost::unit_test::test_unit_id) const {
        if (::geteuid() != 0) {
            boost::test_tools::assertion_result no(false);
            no.message() << "dpkg -i needs root";
            return no;
        }
        if (installed()) {
            boost::test_tools::assertion_result no(false);
            no.message() << "a package named buzzer is installed already";
            return no;
        }
        return true;
    }
};

// Purges the package at the end of the test, whatever happened.
struct purged_after {
    ~purged_after() {
        if (installed()) run("/usr/bin/dpkg", {"--purge", "buzzer"});
    }
};

std::string architecture() {
    auto r = run("/usr/bin/dpkg", {"--print-architecture"});
    return r.out.substr(0, r.out.find('\n'));
}

}  // namespace

BOOST_AUTO_TEST_CASE(the_package_installs_runs_and_purges,
                     *boost::unit_test::precondition(may_install{})) {
    temp_dir out("buzzer-deb-");
    auto made = run(BUZZER_CPACK, {"-G", "DEB", "--config", BUZZER_CPACK_CONFIG, "-B", out.path()});
    BOOST_TEST_REQUIRE(made.exit_code == 0, made.out << made.err);
    const auto deb = out / ("buzzer_" BUZZER_PACKAGE_VERSION "_" + architecture() + ".deb");
    BOOST_TEST_REQUIRE(fs::exists(deb), made.out);

    // What it holds, and what it asks of the machine.
    auto contents = run("/usr/bin/dpkg-deb", {"--contents", deb.string()});
    BOOST_TEST_REQUIRE(contents.exit_code == 0, contents.err);
    for (const char* path :
         {"./usr/bin/buzzer", "./usr/lib/systemd/system/buzzer.service", "./etc/buzzer/buzzer.json",
          "./usr/share/man/man1/buzzer.1.gz", "./usr/share/doc/buzzer/README.md",
          "./usr/share/doc/buzzer/copyright", "./usr/share/doc/buzzer/changelog.gz"})
        BOOST_TEST(contents.out.find(std::string(path) + "\n") != std::string::npos,
                   path << " in\n"
                        << contents.out);
    auto conffiles = run("/usr/bin/dpkg-deb", {"--info", deb.string(), "conffiles"});
    BOOST_TEST(conffiles.out == "/etc/buzzer/buzzer.json\n", conffiles.out << conffiles.err);
    auto depends = run("/usr/bin/dpkg-deb", {"--field", deb.string(), "Depends"});
    BOOST_TEST(depends.out.find("libc6") != std::string::npos, depends.out);
    if (!BUZZER_PACKAGE_POSTGRESQL)
        BOOST_TEST(depends.out.find(',') == std::string::npos, "only libc6: " << depends.out);

    // Debian's own checks of a package: no error, no warning (scripts/static-deps installs
    // lintian).
    BOOST_TEST_REQUIRE(fs::exists("/usr/bin/lintian"), "lintian is not installed");
    auto lint = run("/usr/bin/lintian", {"--fail-on", "error,warning", deb.string()});
    BOOST_TEST(lint.exit_code == 0, lint.out << lint.err);

    purged_after cleanup;
    auto install = run("/usr/bin/dpkg", {"-i", deb.string()});
    BOOST_TEST_REQUIRE(install.exit_code == 0, install.out << install.err);
    BOOST_TEST_REQUIRE(installed());
    auto version = run("/usr/bin/buzzer", {"--version"});
    BOOST_TEST(version.out.starts_with("buzzer " BUZZER_PACKAGE_VERSION " "), version.out);
    // The installed binary was stripped.
    auto symbols = run("/usr/bin/nm", {"/usr/bin/buzzer"});
    BOOST_TEST(symbols.err.find("no symbols") != std::string::npos, symbols.err);
    auto manual = run("/usr/bin/zcat", {"/usr/share/man/man1/buzzer.1.gz"});
    BOOST_TEST(manual.out.starts_with(".TH BUZZER 1 "), manual.out.substr(0, 80));
    // Enabled for boot, with systemd running or not.
    const fs::path wanted = "/etc/systemd/system/multi-user.target.wants/buzzer.service";
    BOOST_TEST(fs::is_symlink(wanted));

    // The installed binary on the installed configuration (API keys on), a database of the
    // test's own and a free port.
    temp_dir state("buzzer-deb-state-");
    const auto database = state / "buzzer.db";
    auto key = run("/usr/bin/buzzer", {"keys", "create", "--database", database.string(),
                                       "--tenant", "ops", "--role", "write"});
    BOOST_TEST_REQUIRE(key.exit_code == 0, key.err);
    const headers bearer{{"Authorization", "Bearer " + key.out.substr(0, key.out.find('\n'))}};
    {
        server_process server{server_options{.database = database,
                                             .args = {"--config", "/etc/buzzer/buzzer.json"},
                                             .binary = "/usr/bin/buzzer"}};
        http_client client(server.port());
        BOOST_TEST(client.post_json("/operations", R"({"kind":"echo"})").status == 401);
        const auto id = submit(client, R"({"kind":"echo","input":"packaged"})", bearer);
        wait_for_status(client, id, "succeeded", 20s, bearer);
        auto result = client.get("/operations/" + id, bearer);
        BOOST_TEST(result.body == "\"packaged\"", result.body);
        BOOST_TEST(server.terminate() == 0);
    }

    auto purge = run("/usr/bin/dpkg", {"--purge", "buzzer"});
    BOOST_TEST(purge.exit_code == 0, purge.out << purge.err);
    BOOST_TEST(!installed());
    BOOST_TEST(!fs::exists("/usr/bin/buzzer"));
    BOOST_TEST(!fs::exists("/etc/buzzer/buzzer.json"));
    BOOST_TEST(!fs::exists("/usr/lib/systemd/system/buzzer.service"));
    BOOST_TEST(!fs::is_symlink(wanted));
    BOOST_TEST(!fs::exists("/etc/systemd/system/buzzer.service"), "the mask is gone");
}
