// The self-contained build: only glibc's libraries are dynamic, mimalloc is the allocator, and
// the binary runs with an empty environment from an empty directory.
#define BOOST_TEST_MODULE package_self_contained
#include <boost/test/unit_test.hpp>
#include <set>
#include <sstream>
#include <string>

#include "integration/common.hpp"

using namespace buzzer::test;
using namespace std::chrono_literals;

namespace {

// The first word of each line ldd prints: "libc.so.6", "/lib64/ld-linux-x86-64.so.2".
std::vector<std::string> needed_libraries(const std::string& ldd_output) {
    std::vector<std::string> names;
    std::istringstream lines(ldd_output);
    for (std::string line; std::getline(lines, line);) {
        std::istringstream words(line);
        std::string first;
        if (words >> first) names.push_back(first.substr(first.rfind('/') + 1));
    }
    return names;
}

}  // namespace

BOOST_AUTO_TEST_CASE(ldd_lists_only_glibc) {
    auto r = run_process("/usr/bin/ldd", {buzzer_binary().string()});
    BOOST_TEST_REQUIRE(r.exit_code == 0, r.out << r.err);
    // glibc's own: the C library, libm, the loader and the kernel's vDSO (and the libraries
    // glibc 2.34 merged into libc, which older builds name).
    const std::set<std::string> glibc{"linux-vdso.so.1",
                                      "libc.so.6",
                                      "libm.so.6",
                                      "libpthread.so.0",
                                      "libdl.so.2",
                                      "librt.so.1",
                                      "ld-linux-x86-64.so.2",
                                      "ld-linux-aarch64.so.1"};
    const auto names = needed_libraries(r.out);
    BOOST_TEST(std::count(names.begin(), names.end(), "libc.so.6") == 1, r.out);
    for (const auto& name : names) BOOST_TEST(glibc.count(name) == 1, name << " in\n" << r.out);
}

BOOST_AUTO_TEST_CASE(mimalloc_is_the_allocator_of_every_library) {
    // malloc and free are the binary's own (mimalloc's) and exported, so that glibc's calls
    // of them (strdup, getaddrinfo) reach the same allocator as the program's.
    auto r = run_process("/usr/bin/nm", {"-D", "--defined-only", buzzer_binary().string()});
    BOOST_TEST_REQUIRE(r.exit_code == 0, r.err);
    for (const char* symbol : {" T malloc\n", " T free\n", " T realloc\n", " T calloc\n",
                               " T posix_memalign\n", " T aligned_alloc\n"})
        BOOST_TEST(r.out.find(symbol) != std::string::npos, symbol);
    auto version = run_buzzer({"--version"}, 20s, {});
    BOOST_TEST(version.exit_code == 0);
    BOOST_TEST(version.out.find(", mimalloc 2.") != std::string::npos, version.out);
    BOOST_TEST(version.out.find(" self-contained") != std::string::npos, version.out);
    BOOST_TEST(version.out.find("no libpq") != std::string::npos, version.out);
}

BOOST_AUTO_TEST_CASE(runs_with_an_empty_environment_from_an_empty_directory) {
    temp_dir cwd("buzzer-bare-");
    server_process server{server_options{.database = "buzzer.db",
                                         .env = {},
                                         .inherit_environment = false,
                                         .working_directory = cwd.path(),
                                         .run_args = false}};
    http_client client(server.port());
    const auto id = submit(client, R"({"kind":"echo","input":{"from":"nowhere"}})");
    wait_for_status(client, id, "succeeded");
    auto result = client.get("/operations/" + id);
    BOOST_TEST(result.status == 200, result.body);
    BOOST_TEST(result.body.find("nowhere") != std::string::npos, result.body);
    // Its state went where it was told, relative to its working directory: nowhere else.
    BOOST_TEST(std::filesystem::exists(cwd / "buzzer.db"));
    BOOST_TEST(server.terminate() == 0);
}

BOOST_AUTO_TEST_CASE(a_postgresql_database_is_refused_with_the_reason) {
    auto r = run_buzzer({"--database", "postgresql://buzzer@localhost/buzzer"});
    BOOST_TEST(r.exit_code == 2);
    BOOST_TEST(r.err.find("without the PostgreSQL backend") != std::string::npos, r.err);
    auto keys = run_buzzer({"keys", "list", "--database", "postgresql://localhost/buzzer"});
    BOOST_TEST(keys.exit_code != 0);
    BOOST_TEST(keys.err.find("without the PostgreSQL backend") != std::string::npos, keys.err);
}
