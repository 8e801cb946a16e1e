#include "store/sqlite/migrate.hpp"

#include <string>

#include "core/time.hpp"
#include "store/migration_list.hpp"

namespace buzzer::store::sqlite {

int schema_version(connection& db) {
    db.exec(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)");
    auto s = db.cached("SELECT coalesce(max(version), 0) FROM schema_migrations");
    s->step();
    return static_cast<int>(s->get_int(0));
}

int migrate(connection& db, std::span<const migration> migrations) {
    const int newest = newest_migration(migrations);
    int current = schema_version(db);
    if (current > newest) throw schema_too_new(current, newest);
    for (const auto& m : migrations) {
        int n = migration_number(m.name);
        if (n <= current) continue;
        transaction tx(db);
        // Another process on the database (a second server, the keys command) may have applied
        // it since the version was read: under the write lock, the version read now holds.
        current = schema_version(db);
        if (n <= current) continue;
        db.exec(m.sql);
        auto ins = db.cached(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)");
        ins->bind(1, n).bind(2, m.name).bind(3, core::now_ms()).exec();
        tx.commit();
        current = n;
    }
    return current;
}

}  // namespace buzzer::store::sqlite
