#include <libpq-fe.h>
#include <sqlite3.h>

#include "store/libraries.hpp"

namespace buzzer::store {

client_libraries client_library_versions() {
    // libpq reports 150014 for 15.14 (major * 10000 + minor since PostgreSQL 10).
    const int pq = PQlibVersion();
    return {sqlite3_libversion(), std::to_string(pq / 10000) + "." + std::to_string(pq % 10000)};
}

}  // namespace buzzer::store
