#include "store/migrate.hpp"

#include <boost/test/unit_test.hpp>

#include "support/process.hpp"

using namespace buzzer;
using buzzer::embedded::file;

BOOST_AUTO_TEST_SUITE(migrations)

BOOST_AUTO_TEST_CASE(applies_the_embedded_schema_once) {
    test::temp_dir dir;
    store::connection db((dir / "m.db").string());
    int v = store::migrate(db, embedded::migrations());
    BOOST_TEST(v == static_cast<int>(embedded::migrations().size()));
    BOOST_TEST(store::migrate(db, embedded::migrations()) == v);  // idempotent
    db.exec("INSERT INTO events (operation_id, type, data) VALUES ('x', 'pending', '{}')");
}

BOOST_AUTO_TEST_CASE(applies_in_order_and_records_versions) {
    test::temp_dir dir;
    store::connection db((dir / "m.db").string());
    const file list[] = {{"0001_a.sql", "CREATE TABLE a (x);"},
                         {"0002_b.sql", "CREATE TABLE b (y); INSERT INTO a VALUES (1);"}};
    BOOST_TEST(store::migrate(db, list) == 2);
    auto s = db.cached("SELECT count(*) FROM schema_migrations");
    BOOST_TEST(s->step());
    BOOST_TEST(s->get_int(0) == 2);
}

BOOST_AUTO_TEST_CASE(failed_migration_leaves_no_trace) {
    test::temp_dir dir;
    store::connection db((dir / "m.db").string());
    const file list[] = {{"0001_a.sql", "CREATE TABLE a (x);"},
                         {"0002_b.sql", "CREATE TABLE b (y); THIS IS NOT SQL;"}};
    BOOST_CHECK_THROW(store::migrate(db, list), store::sqlite_error);
    BOOST_TEST(store::schema_version(db) == 1);
    BOOST_CHECK_THROW(db.exec("SELECT * FROM b"), store::sqlite_error);
}

BOOST_AUTO_TEST_CASE(refuses_a_gap) {
    test::temp_dir dir;
    store::connection db((dir / "m.db").string());
    const file list[] = {{"0001_a.sql", "CREATE TABLE a (x);"},
                         {"0003_c.sql", "CREATE TABLE c (x);"}};
    BOOST_CHECK_THROW(store::migrate(db, list), std::runtime_error);
    BOOST_TEST(store::schema_version(db) == 0);
}

BOOST_AUTO_TEST_CASE(refuses_a_database_newer_than_the_binary) {
    test::temp_dir dir;
    store::connection db((dir / "m.db").string());
    const file two[] = {{"0001_a.sql", "CREATE TABLE a (x);"},
                        {"0002_b.sql", "CREATE TABLE b (y);"}};
    store::migrate(db, two);
    const file one[] = {{"0001_a.sql", "CREATE TABLE a (x);"}};
    BOOST_CHECK_THROW(store::migrate(db, one), std::runtime_error);
}

BOOST_AUTO_TEST_SUITE_END()
