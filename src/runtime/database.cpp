#include "runtime/database.hpp"

#include "runtime/embedded.hpp"

namespace buzzer::runtime {

std::unique_ptr<store::store> make_store(store::settings s) {
    const bool postgres = store::is_postgres_uri(s.path);
    const auto files = postgres ? embedded::postgresql_migrations() : embedded::migrations();
    s.migrations.clear();
    for (const auto& m : files) s.migrations.push_back({m.name, m.content});
    return postgres ? store::make_postgres_store(std::move(s))
                    : store::make_sqlite_store(std::move(s));
}

}  // namespace buzzer::runtime
