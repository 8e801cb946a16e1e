#define BOOST_TEST_MODULE integration_config
#include <boost/test/unit_test.hpp>

#include "integration/common.hpp"

using namespace buzzer::test;
namespace json = boost::json;

BOOST_AUTO_TEST_CASE(configured_exec_kind_runs_a_command) {
    temp_dir dir;
    auto config = dir.write_file("buzzer.json", R"({
        "kinds": {
            "shout": {
                "exec": {"argv": ["/bin/sh", "-c",
                  "read in; echo '{\"progress\": {\"percent\": 50, \"message\": \"half\"}}'; echo \"{\\\"result\\\": {\\\"got\\\": $in, \\\"op\\\": \\\"$BUZZER_OPERATION_ID\\\"}}\""]},
                "timeout_s": 10, "max_attempts": 2, "concurrency": 2,
                "input": {"type": "object", "required": ["word"], "properties": {"word": {"type": "string"}}}
            }
        }
    })");
    server_process server{server_options{.args = {"--config", config.string()}}};
    http_client client{server.port()};
    bool listed = false;
    auto kinds = client.get("/kinds");
    for (const auto& k : kinds.json().as_object().at("kinds").as_array())
        if (k.as_object().at("name").as_string() == "shout") {
            listed = true;
            BOOST_TEST(k.as_object().at("executor").as_string() == "exec");
            BOOST_TEST(k.as_object().at("max_attempts").as_int64() == 2);
        }
    BOOST_TEST(listed);
    auto bad = client.post_json("/operations", R"({"kind":"shout","input":{}})");
    BOOST_TEST(bad.status == 422);
    BOOST_TEST(detail_of(bad.json().as_object()) == "input.word is required");
    auto id = submit(client, R"({"kind":"shout","input":{"word":"hi"}})");
    wait_for_status(client, id, "succeeded");
    auto result = client.get("/operations/" + id).json().as_object();
    BOOST_TEST(result.at("got") == json::parse(R"({"word":"hi"})"));
    BOOST_TEST(result.at("op").as_string() == id);
}

BOOST_AUTO_TEST_CASE(invalid_config_exits_2_naming_the_key) {
    temp_dir dir;
    auto unknown = dir.write_file("a.json", R"({"listen": "127.0.0.1:0", "colour": "blue"})");
    auto r = run_buzzer({"--config", unknown.string()});
    BOOST_TEST(r.exit_code == 2);
    BOOST_TEST(r.err.find("a.json") != std::string::npos);
    BOOST_TEST(r.err.find("colour") != std::string::npos);
    auto no_argv = dir.write_file("b.json", R"({"kinds": {"k": {"exec": {"cwd": "."}}}})");
    r = run_buzzer({"--config", no_argv.string()});
    BOOST_TEST(r.exit_code == 2);
    BOOST_TEST(r.err.find("kinds.k.exec.argv") != std::string::npos);
    auto bad_schema = dir.write_file(
        "c.json",
        R"({"kinds": {"k": {"http": {"url": "http://127.0.0.1:1/"}, "input": {"type": "text"}}}})");
    r = run_buzzer({"--config", bad_schema.string()});
    BOOST_TEST(r.exit_code == 2);
    BOOST_TEST(r.err.find("kinds.k.input.type") != std::string::npos);
    r = run_buzzer({"--config", (dir / "missing.json").string()});
    BOOST_TEST(r.exit_code == 2);
}

BOOST_AUTO_TEST_CASE(help_lists_the_stable_flags) {
    auto r = run_buzzer({"--help"});
    BOOST_TEST(r.exit_code == 0);
    for (auto flag : {"--listen", "--database", "--config", "--threads"})
        BOOST_TEST(r.out.find(flag) != std::string::npos);
}
