#include "store/postgres/migrate.hpp"

#include <string>

#include "core/time.hpp"
#include "store/migration_list.hpp"

namespace buzzer::store::postgres {
namespace {

// The advisory lock the migrating node holds: the same number for every node of any version.
constexpr const char* lock_key = "1651864186";

// Holds the session's advisory lock while it lives.
class migration_lock {
  public:
    explicit migration_lock(connection& db) : db_(db) {
        db_.exec(std::string("SELECT pg_advisory_lock(") + lock_key + ")");
    }
    ~migration_lock() {
        try {
            if (db_.ok()) db_.exec(std::string("SELECT pg_advisory_unlock(") + lock_key + ")");
        } catch (...) {
            // A broken connection has released it with its session.
        }
    }
    migration_lock(const migration_lock&) = delete;
    migration_lock& operator=(const migration_lock&) = delete;

  private:
    connection& db_;
};

}  // namespace

int schema_version(connection& db) {
    if (!db.query("SELECT to_regclass('schema_migrations') IS NOT NULL").boolean(0, 0)) return 0;
    return static_cast<int>(
        db.query("SELECT coalesce(max(version), 0) FROM schema_migrations").int64(0, 0));
}

int migrate(connection& db, std::span<const migration> migrations) {
    const int newest = newest_migration(migrations);
    migration_lock lock(db);
    db.exec(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version integer PRIMARY KEY, name text NOT NULL, applied_at bigint NOT NULL)");
    int current = schema_version(db);
    if (current > newest) throw schema_too_new(current, newest);
    for (const auto& m : migrations) {
        const int n = migration_number(m.name);
        if (n <= current) continue;
        transaction tx(db);
        db.exec(m.sql);
        const param params[] = {int_param(n), text_param(m.name), int_param(core::now_ms())};
        db.query("INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                 params);
        tx.commit();
        current = n;
    }
    return current;
}

}  // namespace buzzer::store::postgres
