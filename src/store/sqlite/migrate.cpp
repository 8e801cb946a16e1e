#include "store/sqlite/migrate.hpp"

#include <charconv>
#include <string>

#include "core/time.hpp"

namespace buzzer::store::sqlite {
namespace {

int number_of(std::string_view name) {
    int n = 0;
    auto [p, ec] = std::from_chars(name.data(), name.data() + name.size(), n);
    if (ec != std::errc{} || p == name.data() || *p != '_' || n <= 0)
        throw std::runtime_error("migration file name must be NNNN_name.sql: " + std::string(name));
    return n;
}

}  // namespace

int schema_version(connection& db) {
    db.exec(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)");
    auto s = db.cached("SELECT coalesce(max(version), 0) FROM schema_migrations");
    s->step();
    return static_cast<int>(s->get_int(0));
}

int migrate(connection& db, std::span<const migration> migrations) {
    int expected = 1;
    for (const auto& m : migrations) {
        if (number_of(m.name) != expected)
            throw std::runtime_error("migrations are not contiguous at " + std::string(m.name));
        ++expected;
    }
    const int newest = expected - 1;
    int current = schema_version(db);
    if (current > newest)
        throw std::runtime_error("database schema version " + std::to_string(current) +
                                 " is newer than this binary's " + std::to_string(newest));
    for (const auto& m : migrations) {
        int n = number_of(m.name);
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
