// Which backends this build has, and the versions of their client libraries.
#ifndef BUZZER_WITHOUT_POSTGRESQL
#include <libpq-fe.h>
#endif
#include <sqlite3.h>

#include <stdexcept>

#include "store/libraries.hpp"
#include "store/store.hpp"

namespace buzzer::store {

bool is_postgres_uri(std::string_view database) {
    return database.starts_with("postgresql://") || database.starts_with("postgres://");
}

#ifdef BUZZER_WITHOUT_POSTGRESQL

bool has_postgres_backend() { return false; }

client_libraries client_library_versions() { return {sqlite3_libversion(), ""}; }

std::unique_ptr<store> make_postgres_store(settings) {
    throw std::runtime_error(std::string(without_postgres_backend));
}

#else

bool has_postgres_backend() { return true; }

client_libraries client_library_versions() {
    // libpq reports 150014 for 15.14 (major * 10000 + minor since PostgreSQL 10).
    const int pq = PQlibVersion();
    return {sqlite3_libversion(), std::to_string(pq / 10000) + "." + std::to_string(pq % 10000)};
}

#endif

}  // namespace buzzer::store
