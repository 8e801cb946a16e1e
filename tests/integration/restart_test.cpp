#define BOOST_TEST_MODULE integration_restart
#include <sys/resource.h>

#include <atomic>
#include <boost/test/unit_test.hpp>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "integration/common.hpp"
#include "support/sse_client.hpp"

using namespace buzzer::test;
namespace json = boost::json;
using namespace std::chrono_literals;

namespace {

std::string str(const json::object& o, std::string_view key) {
    return std::string(o.at(key).as_string());
}

std::vector<std::string> event_types(unsigned short port, const std::string& id) {
    sse_stream s(port, "/operations/" + id + "/status");
    std::vector<std::string> out;
    for (const auto& e : s.read_until_end(20s)) out.push_back(e.type);
    return out;
}

// Bytes that the server has not read yet on its end of the loopback connection from
// `client_port` to `server_port` (from /proc/net/tcp), or -1 if the connection is not listed.
long unread_by_server(unsigned short server_port, unsigned short client_port) {
    std::ifstream table("/proc/net/tcp");
    std::string line;
    std::getline(table, line);  // the heading
    char local[16], remote[16];
    std::snprintf(local, sizeof local, ":%04X", server_port);
    std::snprintf(remote, sizeof remote, ":%04X", client_port);
    while (std::getline(table, line)) {
        std::istringstream fields(line);
        std::string slot, from, to, state, queues;
        fields >> slot >> from >> to >> state >> queues;
        if (from.ends_with(local) && to.ends_with(remote))
            return std::stol(queues.substr(queues.find(':') + 1), nullptr, 16);
    }
    return -1;
}

// Sets the soft file size limit (RLIMIT_FSIZE) of process `pid`: its writes past `bytes`
// into a regular file fail with EFBIG, as on a full disk, while reads go on. Returns the
// limit it had.
rlim_t limit_file_size(pid_t pid, rlim_t bytes) {
    rlimit now{};
    BOOST_TEST_REQUIRE(::prlimit(pid, RLIMIT_FSIZE, nullptr, &now) == 0);
    const rlim_t before = now.rlim_cur;
    now.rlim_cur = bytes;
    BOOST_TEST_REQUIRE(::prlimit(pid, RLIMIT_FSIZE, &now, nullptr) == 0);
    return before;
}

// What one client saw while the server was killed under it.
struct client_record {
    std::vector<std::string> accepted;    // ids answered 202
    std::vector<std::string> unexpected;  // answers other than 202, errors before the kill
    bool cut = false;                     // its last request failed after the kill
};

// Clients submit on `clients` connections of their own while the server (with `args`) is
// killed with SIGKILL `kills` times, then restarted on the same database. Requests in flight
// at a kill may fail; every id that was answered 202 must be there after the last restart and
// succeed.
void kill9_under_submissions(const std::vector<std::string>& args, int clients, int kills) {
    temp_dir dir;
    auto const db = dir / "submissions.db";
    std::vector<std::string> accepted;
    for (int round = 0; round < kills; ++round) {
        server_process server{server_options{.database = db, .args = args}};
        std::atomic<bool> killing{false};
        std::atomic<int> answered{0};
        std::vector<client_record> records(clients);
        std::vector<std::thread> threads;
        for (int i = 0; i < clients; ++i) {
            threads.emplace_back([&, i, port = server.port()] {
                auto& record = records[i];
                http_client c(port, 10s);
                for (int n = 0;; ++n) {
                    // Short sleeps (some are running at the kill and run again) and echoes,
                    // each with an input of its own.
                    auto const input = "\"" + std::to_string(round) + "-" + std::to_string(i) +
                                       "-" + std::to_string(n) + "\"";
                    auto const body =
                        n % 2 == 0
                            ? R"({"kind":"echo","input":)" + input + "}"
                            : R"({"kind":"sleep","input":{"seconds":0.1},"max_attempts":10})";
                    try {
                        auto r = c.post_json("/operations", body);
                        if (r.status != 202) {
                            record.unexpected.push_back("answered " + std::to_string(r.status) +
                                                        " " + r.body);
                            return;
                        }
                        record.accepted.emplace_back(r.json().as_object().at("id").as_string());
                        ++answered;
                    } catch (const std::exception& e) {
                        // The kill cut this request (reset, refused or closed): not answered.
                        if (killing) {
                            record.cut = true;
                        } else {
                            record.unexpected.push_back("before the kill: " +
                                                        std::string(e.what()));
                        }
                        return;
                    }
                }
            });
        }
        // Kill at a different point of each round, with every client still submitting.
        int const answers_before_kill = 30 + 50 * round;
        bool const reached = wait_until([&] { return answered >= answers_before_kill; }, 20s);
        killing = true;
        server.kill9();
        for (auto& t : threads) t.join();
        BOOST_TEST_REQUIRE(reached, "round " << round << ": " << answered << " answers in 20 s");
        int cut = 0;
        for (const auto& record : records) {
            for (const auto& what : record.unexpected)
                BOOST_ERROR("round " << round << ": " << what);
            accepted.insert(accepted.end(), record.accepted.begin(), record.accepted.end());
            cut += record.cut ? 1 : 0;
        }
        BOOST_TEST_MESSAGE("round " << round << ": " << answered << " answered, " << cut
                                    << " requests cut by the kill");
        // Every client ends with a request that the kill cut: it was still submitting.
        BOOST_TEST(cut == clients);
    }

    server_process server{server_options{.database = db, .args = args}};
    http_client c(server.port());
    std::vector<std::string> lost, not_succeeded, left = accepted;
    int ran_again = 0;
    bool const all_done = wait_until(
        [&] {
            std::vector<std::string> still;
            for (const auto& id : left) {
                auto r = c.get("/operations/" + id + "/status");
                if (r.status == 303) {  // succeeded
                    ran_again += r.json().as_object().at("attempt").as_int64() > 1 ? 1 : 0;
                    continue;
                }
                if (r.status == 404) {
                    lost.push_back(id);
                    continue;
                }
                auto const status = r.json().as_object().at("status").as_string();
                if (status == "pending" || status == "running")
                    still.push_back(id);
                else
                    not_succeeded.push_back(id + " " + r.body);
            }
            left = std::move(still);
            return left.empty();
        },
        60s, 100ms);
    BOOST_TEST_MESSAGE(accepted.size() << " operations answered 202 over " << kills << " kills, "
                                       << ran_again << " of them running at a kill and run again");
    BOOST_TEST(lost.empty(), lost.size() << " answered operations lost, the first "
                                         << (lost.empty() ? "" : lost.front()));
    BOOST_TEST(not_succeeded.empty(), not_succeeded.size()
                                          << " did not succeed, the first "
                                          << (not_succeeded.empty() ? "" : not_succeeded.front()));
    BOOST_TEST(all_done, left.size() << " still unfinished after 60 s");
}

}  // namespace

BOOST_AUTO_TEST_SUITE(restart)

BOOST_AUTO_TEST_CASE(kill9_while_clients_submit_loses_no_answered_operation) {
    kill9_under_submissions({"--synchronous", "full"}, 4, 5);
}

BOOST_AUTO_TEST_CASE(kill9_while_clients_submit_loses_no_answered_operation_when_not_synced) {
    // Without fdatasync a power cut may lose commits, a crash of the process none.
    kill9_under_submissions({"--synchronous", "normal"}, 4, 5);
}

BOOST_AUTO_TEST_CASE(kill9_loses_no_accepted_operation) {
    temp_dir dir;
    auto db = dir / "crash.db";
    std::vector<std::string> accepted;
    std::string running_id, exhausted_id;
    std::int64_t last_seq_before = 0;
    {
        server_process server{server_options{.database = db, .args = {"--max-running", "2"}}};
        http_client client{server.port()};
        running_id = submit(client, R"({"kind":"sleep","input":{"seconds":60},"max_attempts":3})");
        exhausted_id =
            submit(client, R"({"kind":"sleep","input":{"seconds":60},"max_attempts":1})");
        wait_for_status(client, running_id, "running");
        wait_for_status(client, exhausted_id, "running");
        // These stay pending behind the two running sleeps.
        for (int i = 0; i < 50; ++i)
            accepted.push_back(
                submit(client, R"({"kind":"echo","input":)" + std::to_string(i) + "}"));
        sse_stream s(server.port(), "/operations/" + running_id + "/status");
        auto first = s.next_event(5s);
        BOOST_TEST_REQUIRE(first.has_value());
        auto second = s.next_event(5s);
        BOOST_TEST_REQUIRE(second.has_value());
        last_seq_before = std::stoll(*second->id);
        server.kill9();
    }
    server_process server{server_options{.database = db, .args = {"--max-running", "2"}}};
    http_client client{server.port()};
    // Pending ones kept their place and run now.
    for (const auto& id : accepted) wait_for_status(client, id, "succeeded");
    // The interrupted attempt counted; attempts remained, so it runs again.
    auto again = wait_for_status(client, running_id, "running");
    BOOST_TEST(again.at("attempt").as_int64() == 2);
    // No attempts left: failed as abandoned.
    auto lost = wait_for_status(client, exhausted_id, "failed");
    BOOST_TEST(str(lost.at("error").as_object(), "type") == "/problems/abandoned");
    // The recovery wrote a pending event, and sequence numbers went on increasing.
    sse_stream s(server.port(), "/operations/" + running_id + "/status",
                 std::to_string(last_seq_before));
    auto next = s.next_event(5s);
    BOOST_TEST_REQUIRE(next.has_value());
    BOOST_TEST(next->type == "pending");
    BOOST_TEST(std::stoll(*next->id) > last_seq_before);
    client.post_json("/operations/" + running_id + "/cancel", "");
}

BOOST_AUTO_TEST_CASE(sigterm_hands_running_work_back_without_spending_an_attempt) {
    temp_dir dir;
    auto db = dir / "clean.db";
    std::string id;
    {
        server_process server{server_options{.database = db}};
        http_client client{server.port()};
        id = submit(client, R"({"kind":"sleep","input":{"seconds":60},"max_attempts":1})");
        wait_for_status(client, id, "running");
        BOOST_TEST(server.terminate(15s) == 0);
    }
    server_process server{server_options{.database = db}};
    http_client client{server.port()};
    auto op = wait_for_status(client, id, "running");
    BOOST_TEST(op.at("attempt").as_int64() == 1);  // the same, first attempt again
    auto types = [&] {
        sse_stream s(server.port(), "/operations/" + id + "/status");
        std::vector<std::string> out;
        for (int i = 0; i < 4; ++i)
            if (auto e = s.next_event(3s)) out.push_back(e->type);
        return out;
    }();
    BOOST_TEST((types == std::vector<std::string>{"pending", "running", "pending", "running"}));
    client.post_json("/operations/" + id + "/cancel", "");
    wait_for_status(client, id, "canceled");
}

BOOST_AUTO_TEST_CASE(sigterm_exits_zero_quickly_with_a_job_running) {
    server_process server;
    http_client client{server.port()};
    auto id = submit(client, R"({"kind":"sleep","input":{"seconds":60}})");
    wait_for_status(client, id, "running");
    auto start = std::chrono::steady_clock::now();
    BOOST_TEST(server.terminate(15s) == 0);
    BOOST_TEST((std::chrono::steady_clock::now() - start < 10s));
}

BOOST_AUTO_TEST_CASE(
    a_shutdown_ends_within_its_grace_despite_a_stubborn_command_and_a_stalled_client) {
    // A command that ignores SIGTERM (its own SIGKILL would come after 5 s) and a client that
    // stalls in the middle of its request headers: a 1 s grace still ends the server in 1 s.
    temp_dir dir;
    auto config = write_stubborn_kind(dir);
    auto db = dir / "grace.db";
    std::string id;
    {
        server_process server{server_options{
            .database = db, .args = {"--config", config.string(), "--shutdown-grace", "1"}}};
        http_client client{server.port()};
        id = submit(client, R"({"kind":"stubborn","max_attempts":1})");
        wait_for_progress(client, id);
        raw_connection stalled(server.port());
        BOOST_TEST_REQUIRE(!stalled.send("GET /healthz HTTP/1.1\r\nHo"));
        const auto client_port = stalled.socket().local_endpoint().port();
        BOOST_TEST_REQUIRE(
            wait_until([&] { return unread_by_server(server.port(), client_port) == 0; }, 10s));
        auto start = std::chrono::steady_clock::now();
        BOOST_TEST(server.terminate(15s) == 0);
        auto took = std::chrono::steady_clock::now() - start;
        BOOST_TEST((took < 2500ms), std::chrono::duration<double>(took).count() << " s");
    }
    // The attempt was handed back, not spent.
    server_process server{server_options{.database = db, .args = {"--config", config.string()}}};
    http_client client{server.port()};
    auto op = client.get("/operations/" + id + "/status").json().as_object();
    BOOST_TEST(op.at("status").as_string() != "failed");
    client.post_json("/operations/" + id + "/cancel", "");
}

BOOST_AUTO_TEST_CASE(a_cancel_answered_202_holds_across_a_kill9_before_the_job_stopped) {
    // The command ignores SIGTERM: 5 s pass before it is killed, and the server dies first.
    temp_dir dir;
    auto config = write_stubborn_kind(dir);
    auto db = dir / "cancel.db";
    std::string id;
    {
        server_process server{
            server_options{.database = db, .args = {"--config", config.string()}}};
        http_client client{server.port()};
        id = submit(client, R"({"kind":"stubborn","max_attempts":3})");
        wait_for_progress(client, id);
        BOOST_TEST_REQUIRE(client.post_json("/operations/" + id + "/cancel", "").status == 202);
        server.kill9();
    }
    server_process server{server_options{.database = db, .args = {"--config", config.string()}}};
    http_client client{server.port()};
    auto op = client.get("/operations/" + id + "/status").json().as_object();
    BOOST_TEST(op.at("status").as_string() == "canceled");
    BOOST_TEST(op.at("attempt").as_int64() == 1);  // not run again
    BOOST_TEST(str(op.at("error").as_object(), "type") == "/problems/canceled");
    sse_stream s(server.port(), "/operations/" + id + "/status");
    auto events = s.read_until_end(10s);
    BOOST_TEST_REQUIRE(!events.empty());
    BOOST_TEST(events.back().type == "canceled");
}

BOOST_AUTO_TEST_CASE(a_submission_still_arriving_at_sigterm_gets_503_with_retry_after) {
    server_process server;
    raw_connection conn(server.port());
    const std::string body = R"({"kind":"echo"})";
    const std::string head =
        "POST /operations HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        "Content-Length: " +
        std::to_string(body.size()) + "\r\n\r\n";
    BOOST_TEST_REQUIRE(!conn.send(head + body.substr(0, 8)));
    // Once the server has read what was sent, the request is in progress (a connection that
    // has not started one is closed at once by a shutdown).
    const auto client_port = conn.socket().local_endpoint().port();
    BOOST_TEST_REQUIRE(
        wait_until([&] { return unread_by_server(server.port(), client_port) == 0; }, 10s));
    BOOST_TEST_REQUIRE(::kill(server.pid(), SIGTERM) == 0);
    // Shutting down once it accepts no more connections.
    BOOST_TEST_REQUIRE(wait_until(
        [&] {
            try {
                raw_connection probe(server.port(), 500ms);
                return false;
            } catch (const std::exception&) {
                return true;
            }
        },
        10s));
    BOOST_TEST_REQUIRE(!conn.send(body.substr(8)));
    auto answer = conn.receive_until_close(10s);
    BOOST_TEST(answer.starts_with("HTTP/1.1 503"), answer);
    BOOST_TEST(answer.find("Retry-After: ") != std::string::npos, answer);
    BOOST_TEST(answer.find("application/problem+json") != std::string::npos, answer);
    BOOST_TEST(answer.find("/problems/shutting-down") != std::string::npos, answer);
    auto status = server.wait_exit(15s);
    BOOST_TEST_REQUIRE(status.has_value());
    BOOST_TEST(*status == 0);
}

BOOST_AUTO_TEST_CASE(restart_rebinds_the_same_port_at_once) {
    temp_dir dir;
    auto db = dir / "port.db";
    unsigned short port = 0;
    {
        server_process server{server_options{.database = db}};
        port = server.port();
        http_client client{port};
        BOOST_TEST(client.get("/healthz").status == 200);
        server.kill9();
    }
    server_process again{
        server_options{.database = db, .listen = "127.0.0.1:" + std::to_string(port)}};
    BOOST_TEST(again.port() == port);
}

BOOST_AUTO_TEST_CASE(writes_that_fail_for_a_while_get_503_and_strand_no_operation) {
    // One job at a time: the echo waits in the scheduler's queue behind the sleep.
    server_process server{server_options{.args = {"--max-running", "1"}}};
    http_client client{server.port()};
    auto slow = submit(client, R"({"kind":"sleep","input":{"seconds":1,"steps":4}})");
    auto queued = submit(client, R"({"kind":"echo","input":{"n":1}})");
    // No checkpoint has run (far fewer frames than it takes), so every write appends to the
    // WAL: past its current size, all of them fail. The log, much smaller, is still written.
    const auto wal = std::filesystem::file_size(server.database_path().string() + "-wal");
    BOOST_TEST_REQUIRE(wal > server.log_contents().size() + 4096);
    const rlim_t before = limit_file_size(server.pid(), wal);

    auto refused = client.post_json("/operations", R"({"kind":"echo"})");
    BOOST_TEST(refused.status == 503, refused.body);
    BOOST_TEST(refused.header("Content-Type") == "application/problem+json");
    BOOST_TEST(refused.body.find("/problems/database-unavailable") != std::string::npos,
               refused.body);
    BOOST_TEST(refused.header("Retry-After") == "5");
    BOOST_TEST(client.get("/readyz").status == 503);
    // The sleep's progress reports and then its outcome cannot be written.
    bool stuck = wait_until(
        [&] {
            return server.log_contents().find("cannot record the outcome") != std::string::npos;
        },
        10s);
    BOOST_TEST_REQUIRE(stuck, server.log_contents());
    BOOST_TEST(status_of(client, slow).at("status").as_string() == "running");

    limit_file_size(server.pid(), before);
    // Both finish once the store takes writes again: the outcome is written late, and the echo
    // was not dropped from the queue. The reports lost meanwhile did not fail the attempt.
    auto done = wait_for_status(client, slow, "succeeded", 10s);
    BOOST_TEST(done.at("attempt").as_int64() == 1);
    BOOST_TEST(wait_for_status(client, queued, "succeeded", 10s).at("attempt").as_int64() == 1);
    auto events = event_types(server.port(), slow);
    BOOST_TEST_REQUIRE(!events.empty());
    BOOST_TEST(events.back() == "completed");
    BOOST_TEST(client.get("/readyz").status == 200);
    BOOST_TEST(client.post_json("/operations", R"({"kind":"echo"})").status == 202);
}

BOOST_AUTO_TEST_CASE(a_shutdown_while_writes_fail_ends_within_its_grace) {
    temp_dir dir;
    auto db = dir / "full.db";
    std::string id;
    {
        server_process server{server_options{.database = db, .args = {"--shutdown-grace", "1"}}};
        http_client client{server.port()};
        id = submit(client, R"({"kind":"sleep","input":{"seconds":0.3}})");
        limit_file_size(server.pid(), std::filesystem::file_size(db.string() + "-wal"));
        BOOST_TEST_REQUIRE(wait_until(
            [&] {
                return server.log_contents().find("cannot record the outcome") != std::string::npos;
            },
            10s));
        // The outcome that cannot be written is given up when the grace ends.
        auto const start = std::chrono::steady_clock::now();
        BOOST_TEST(server.terminate() == 0);
        BOOST_TEST((std::chrono::steady_clock::now() - start < 3s));
    }
    // Still running in the store: the next start runs it again.
    server_process server{server_options{.database = db}};
    http_client client{server.port()};
    BOOST_TEST(wait_for_status(client, id, "succeeded", 10s).at("attempt").as_int64() == 2);
}

BOOST_AUTO_TEST_CASE(database_newer_than_the_binary_is_refused) {
    temp_dir dir;
    auto db = dir / "future.db";
    {
        server_process server{server_options{.database = db}};
        server.terminate();
    }
    // Pretend a later version migrated this database.
    auto r = run_process("/usr/bin/sqlite3", {db.string(),
                                              "INSERT INTO schema_migrations (version, name, "
                                              "applied_at) VALUES (9999, '9999_future.sql', 0)"});
    if (r.exit_code != 0) {
        BOOST_TEST_MESSAGE("sqlite3 shell not available: " << r.err);
        return;
    }
    auto run = run_buzzer({"--listen", "127.0.0.1:0", "--database", db.string()}, 10s);
    BOOST_TEST(run.exit_code != 0);
    BOOST_TEST(run.err.find("newer") != std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()
