#include "store/sqlite/migrate.hpp"

#include <boost/test/unit_test.hpp>

#include "runtime/embedded.hpp"
#include "store/sqlite/queries.hpp"
#include "support/process.hpp"

using namespace buzzer;
namespace sql = buzzer::store::sqlite;
using file = buzzer::store::migration;

namespace {

// The embedded schema as the store takes it.
std::vector<file> embedded_schema() {
    std::vector<file> out;
    for (const auto& m : embedded::migrations()) out.push_back({m.name, m.content});
    return out;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(migrations)

BOOST_AUTO_TEST_CASE(applies_the_embedded_schema_once) {
    test::temp_dir dir;
    sql::connection db((dir / "m.db").string());
    int v = sql::migrate(db, embedded_schema());
    BOOST_TEST(v == static_cast<int>(embedded_schema().size()));
    BOOST_TEST(sql::migrate(db, embedded_schema()) == v);  // idempotent
    db.exec("INSERT INTO events (operation_id, type, data) VALUES ('x', 'pending', '{}')");
}

BOOST_AUTO_TEST_CASE(applies_in_order_and_records_versions) {
    test::temp_dir dir;
    sql::connection db((dir / "m.db").string());
    const file list[] = {{"0001_a.sql", "CREATE TABLE a (x);"},
                         {"0002_b.sql", "CREATE TABLE b (y); INSERT INTO a VALUES (1);"}};
    BOOST_TEST(sql::migrate(db, list) == 2);
    auto s = db.cached("SELECT count(*) FROM schema_migrations");
    BOOST_TEST(s->step());
    BOOST_TEST(s->get_int(0) == 2);
}

BOOST_AUTO_TEST_CASE(failed_migration_leaves_no_trace) {
    test::temp_dir dir;
    sql::connection db((dir / "m.db").string());
    const file list[] = {{"0001_a.sql", "CREATE TABLE a (x);"},
                         {"0002_b.sql", "CREATE TABLE b (y); THIS IS NOT SQL;"}};
    BOOST_CHECK_THROW(sql::migrate(db, list), sql::sqlite_error);
    BOOST_TEST(sql::schema_version(db) == 1);
    BOOST_CHECK_THROW(db.exec("SELECT * FROM b"), sql::sqlite_error);
}

BOOST_AUTO_TEST_CASE(refuses_a_gap) {
    test::temp_dir dir;
    sql::connection db((dir / "m.db").string());
    const file list[] = {{"0001_a.sql", "CREATE TABLE a (x);"},
                         {"0003_c.sql", "CREATE TABLE c (x);"}};
    BOOST_CHECK_THROW(sql::migrate(db, list), std::runtime_error);
    BOOST_TEST(sql::schema_version(db) == 0);
}

BOOST_AUTO_TEST_CASE(refuses_a_database_newer_than_the_binary) {
    test::temp_dir dir;
    sql::connection db((dir / "m.db").string());
    const file two[] = {{"0001_a.sql", "CREATE TABLE a (x);"},
                        {"0002_b.sql", "CREATE TABLE b (y);"}};
    sql::migrate(db, two);
    const file one[] = {{"0001_a.sql", "CREATE TABLE a (x);"}};
    BOOST_CHECK_THROW(sql::migrate(db, one), std::runtime_error);
}

// Before tenants (schema 0006), operations and idempotency keys had none: they are the default
// tenant's afterwards, and nothing is lost on the way.
BOOST_AUTO_TEST_CASE(a_database_made_before_tenants_keeps_its_operations_and_keys) {
    test::temp_dir dir;
    sql::connection db((dir / "m.db").string());
    const auto all = embedded_schema();
    BOOST_REQUIRE(all.size() > 6u);
    BOOST_TEST(sql::migrate(db, std::span(all).first(6)) == 6);
    db.exec(
        "INSERT INTO operations (id, kind, status, input, priority, max_attempts, timeout_s, "
        "created_at) VALUES ('01JDB6Q6X8Z3M9J1V7Q0000001', 'echo', 'pending', 'null', 0, 3, 60, "
        "1000);"
        "INSERT INTO events (seq, operation_id, type, data) "
        "VALUES (7, '01JDB6Q6X8Z3M9J1V7Q0000001', 'pending', '{}');"
        "INSERT INTO idempotency_keys (key, request, operation_id, created_at) "
        "VALUES ('k', '{\"kind\":\"echo\"}', '01JDB6Q6X8Z3M9J1V7Q0000001', 1000);");

    BOOST_TEST(sql::migrate(db, all) == static_cast<int>(all.size()));
    const store::tenant_id home(core::default_tenant);
    auto op = sql::load_operation(db, home, "01JDB6Q6X8Z3M9J1V7Q0000001");
    BOOST_REQUIRE(op);
    BOOST_TEST(op->tenant == "default");
    BOOST_TEST(op->kind == "echo");
    BOOST_TEST(!sql::load_operation(db, store::tenant_id("acme"), op->id));
    auto key = sql::find_idempotency_key(db, home, "k");
    BOOST_REQUIRE(key);
    BOOST_TEST(key->operation_id == op->id);
    BOOST_TEST(key->request == R"({"kind":"echo"})");
    BOOST_TEST(!sql::find_idempotency_key(db, store::tenant_id("acme"), "k"));
    BOOST_TEST(sql::read_events(db, home, {op->id}, 0, 100, 10).size() == 1u);
    BOOST_TEST(sql::pending_operations(db).at(0).tenant == "default");
    // The same key in another tenant is another key now.
    sql::insert_idempotency_key(db, store::tenant_id("acme"), "k", "{}", op->id, 2000);
    // Key versions start from nothing.
    BOOST_TEST(sql::api_key_changes(db, 0).version == 0);
}

// Two processes may start on a database at once: each migration is applied once, by whichever
// comes first, and the other finds it done under the write lock instead of applying it again.
// Here the first migration stands in for the other process: it applies the second one too.
BOOST_AUTO_TEST_CASE(a_migration_applied_meanwhile_elsewhere_is_not_run_again) {
    test::temp_dir dir;
    sql::connection db((dir / "m.db").string());
    const file list[] = {{"0001_a.sql",
                          "CREATE TABLE a (x); CREATE TABLE b (y); "
                          "INSERT INTO schema_migrations VALUES (2, '0002_b.sql', 0);"},
                         {"0002_b.sql", "CREATE TABLE b (y);"}};
    BOOST_TEST(sql::migrate(db, list) == 2);
    BOOST_TEST(sql::schema_version(db) == 2);
}

BOOST_AUTO_TEST_SUITE_END()
