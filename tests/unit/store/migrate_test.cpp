#include "store/sqlite/migrate.hpp"

#include <boost/test/unit_test.hpp>

#include "runtime/embedded.hpp"
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
