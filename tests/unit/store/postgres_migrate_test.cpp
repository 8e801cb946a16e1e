// PostgreSQL migrations on a private cluster: applied once, in order, under the advisory lock
// when nodes start together, and a newer schema refused.
#include <boost/test/unit_test.hpp>
#include <thread>

#include "runtime/embedded.hpp"
#include "store/postgres/migrate.hpp"
#include "support/pg_cluster.hpp"

using namespace buzzer;
namespace pg = buzzer::store::postgres;
using file = buzzer::store::migration;

namespace {

std::vector<file> embedded_schema() {
    std::vector<file> out;
    for (const auto& m : embedded::postgresql_migrations()) out.push_back({m.name, m.content});
    return out;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(postgres_migrations)

BOOST_AUTO_TEST_CASE(applies_the_embedded_schema_once) {
    pg::connection db(test::fresh_pg_database("mig_embedded"));
    const int v = pg::migrate(db, embedded_schema());
    BOOST_TEST(v == static_cast<int>(embedded_schema().size()));
    BOOST_TEST(v >= 1);
    BOOST_TEST(pg::migrate(db, embedded_schema()) == v);
    BOOST_TEST(db.query("SELECT count(*) FROM schema_migrations").int64(0, 0) == v);
    db.exec("INSERT INTO events (seq, operation_id, type, data) VALUES (1, 'x', 'pending', '{}')");
}

BOOST_AUTO_TEST_CASE(applies_in_order_and_records_versions) {
    pg::connection db(test::fresh_pg_database("mig_order"));
    const file list[] = {{"0001_a.sql", "CREATE TABLE a (x int);"},
                         {"0002_b.sql", "CREATE TABLE b (y int); INSERT INTO a VALUES (1);"}};
    BOOST_TEST(pg::migrate(db, list) == 2);
    BOOST_TEST(pg::schema_version(db) == 2);
    BOOST_TEST(db.query("SELECT count(*) FROM a").int64(0, 0) == 1);
}

BOOST_AUTO_TEST_CASE(a_failed_migration_leaves_no_trace) {
    pg::connection db(test::fresh_pg_database("mig_failed"));
    const file list[] = {{"0001_a.sql", "CREATE TABLE a (x int);"},
                         {"0002_b.sql", "CREATE TABLE b (y int); THIS IS NOT SQL;"}};
    BOOST_CHECK_THROW(pg::migrate(db, list), pg::pg_error);
    BOOST_TEST(db.ok());
    BOOST_TEST(pg::schema_version(db) == 1);
    BOOST_TEST(db.query("SELECT to_regclass('b') IS NULL").boolean(0, 0));
}

BOOST_AUTO_TEST_CASE(refuses_a_gap_and_a_newer_schema) {
    pg::connection db(test::fresh_pg_database("mig_newer"));
    const file gap[] = {{"0001_a.sql", "CREATE TABLE a (x int);"},
                        {"0003_c.sql", "CREATE TABLE c (x int);"}};
    BOOST_CHECK_THROW(pg::migrate(db, gap), std::runtime_error);
    const file two[] = {{"0001_a.sql", "CREATE TABLE a (x int);"},
                        {"0002_b.sql", "CREATE TABLE b (x int);"}};
    BOOST_TEST(pg::migrate(db, two) == 2);
    try {
        pg::migrate(db, std::span(two, 1));
        BOOST_FAIL("an older binary migrated a newer schema");
    } catch (const store::database_error& e) {
        const std::string what = e.what();
        BOOST_TEST(what.find('2') != std::string::npos);
        BOOST_TEST(what.find('1') != std::string::npos);
        BOOST_TEST(!e.unavailable());
    }
}

BOOST_AUTO_TEST_CASE(nodes_starting_together_migrate_once) {
    const auto uri = test::fresh_pg_database("mig_together");
    // Each migration sleeps a little, so that the nodes overlap; it fails when run twice.
    const file list[] = {{"0001_a.sql", "SELECT pg_sleep(0.2); CREATE TABLE a (x int);"},
                         {"0002_b.sql", "SELECT pg_sleep(0.2); CREATE TABLE b (x int);"}};
    constexpr int nodes = 4;
    std::vector<std::thread> threads;
    std::vector<int> versions(nodes, -1);
    std::vector<std::string> errors(nodes);
    for (int i = 0; i < nodes; ++i)
        threads.emplace_back([&, i] {
            try {
                pg::connection db(uri);
                versions[i] = pg::migrate(db, list);
            } catch (const std::exception& e) {
                errors[i] = e.what();
            }
        });
    for (auto& t : threads) t.join();
    for (int i = 0; i < nodes; ++i) {
        BOOST_TEST(errors[i] == "");
        BOOST_TEST(versions[i] == 2);
    }
    pg::connection db(uri);
    BOOST_TEST(db.query("SELECT count(*) FROM schema_migrations").int64(0, 0) == 2);
}

BOOST_AUTO_TEST_CASE(a_database_that_cannot_be_reached_is_unavailable) {
    try {
        pg::connection db("postgresql://postgres@/none?host=/nonexistent-dir&port=5432");
        BOOST_FAIL("connected to nothing");
    } catch (const pg::pg_error& e) {
        BOOST_TEST(e.unavailable());
        BOOST_TEST(e.sqlstate() == "");
    }
}

BOOST_AUTO_TEST_CASE(errors_carry_their_sqlstate) {
    pg::connection db(test::fresh_pg_database("mig_errors"));
    db.exec("CREATE TABLE u (k text PRIMARY KEY)");
    const pg::param k[] = {pg::text_param("a")};
    db.query("INSERT INTO u VALUES ($1)", k);
    try {
        db.query("INSERT INTO u VALUES ($1)", k);
        BOOST_FAIL("a duplicate key was taken");
    } catch (const pg::pg_error& e) {
        BOOST_TEST(e.unique_violation());
        BOOST_TEST(!e.unavailable());
    }
    BOOST_CHECK_THROW(db.exec("SELEKT 1"), pg::pg_error);
    BOOST_TEST(db.ok());
}

BOOST_AUTO_TEST_CASE(parameters_and_results_keep_any_text_and_bytes) {
    pg::connection db(test::fresh_pg_database("mig_values"));
    db.exec("CREATE TABLE v (t text, b bytea, a text[])");
    const std::string odd = "quote \" backslash \\ brace { } comma , é";
    const std::string binary("\0\x01\xff\x7f text", 9);
    const std::string_view items[] = {odd, "", "NULL"};
    const pg::param p[] = {pg::text_param(odd), pg::bytes_param(binary),
                           pg::text_array_param(items)};
    db.query("INSERT INTO v VALUES ($1, $2, $3)", p);
    auto r = db.query("SELECT t, b, a[1], a[2], a[3], a[3] IS NULL FROM v");
    BOOST_TEST(r.text(0, 0) == odd);
    BOOST_TEST(r.bytes(0, 1) == binary);
    BOOST_TEST(r.text(0, 2) == odd);
    BOOST_TEST(r.text(0, 3) == "");
    BOOST_TEST(r.text(0, 4) == "NULL");
    BOOST_TEST(!r.boolean(0, 5));
    const pg::param none[] = {std::nullopt};
    BOOST_TEST(db.query("SELECT $1::text IS NULL", none).boolean(0, 0));
}

BOOST_AUTO_TEST_SUITE_END()
