#define BOOST_TEST_MODULE integration_embed
#include <boost/test/unit_test.hpp>

#include "integration/common.hpp"

using namespace buzzer::test;
namespace json = boost::json;

BOOST_AUTO_TEST_CASE(an_embedded_kind_runs_as_a_coroutine) {
    server_process server{server_options{.binary = BUZZER_EMBED_EXAMPLE}};
    http_client client{server.port()};
    auto kinds = client.get("/kinds").json().as_object().at("kinds").as_array();
    bool listed = false;
    for (const auto& k : kinds)
        if (k.as_object().at("name").as_string() == "resize") {
            listed = true;
            BOOST_TEST(k.as_object().at("executor").as_string() == "embedded");
            BOOST_TEST(k.as_object().at("concurrency").as_int64() == 4);
        }
    BOOST_TEST(listed);

    auto bad =
        client.post_json("/operations", R"({"kind":"resize","input":{"width":-1,"height":2}})");
    BOOST_TEST(bad.status == 422);
    BOOST_TEST(detail_of(bad.json().as_object()) == "input.width must be a positive integer");

    auto id = submit(client, R"({"kind":"resize","input":{"width":800,"height":600,"steps":4}})");
    auto done = wait_for_status(client, id, "succeeded");
    BOOST_TEST(done.at("progress").as_object().at("percent").as_int64() == 100);
    BOOST_TEST(client.get("/operations/" + id).json() ==
               json::parse(R"({"width":400,"height":300,"attempt":1})"));
    BOOST_TEST(server.terminate() == 0);
}

BOOST_AUTO_TEST_CASE(canceling_an_embedded_job_reaches_the_coroutine) {
    server_process server{server_options{.binary = BUZZER_EMBED_EXAMPLE}};
    http_client client{server.port()};
    auto id = submit(client, R"({"kind":"resize","input":{"width":8,"height":6,"steps":1000}})");
    wait_for_status(client, id, "running");
    BOOST_TEST(client.post_json("/operations/" + id + "/cancel", "").status == 202);
    wait_for_status(client, id, "canceled");
}
