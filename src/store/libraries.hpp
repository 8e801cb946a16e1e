// The database libraries the store runs with.
#pragma once

#include <string>
#include <string_view>

namespace buzzer::store {

/// Their versions as they report themselves: SQLite's (e.g. "3.40.1") and libpq's ("15.14";
/// empty in a build without the PostgreSQL backend).
struct client_libraries {
    std::string sqlite;
    std::string libpq;
};
client_libraries client_library_versions();

/// Whether this build has the PostgreSQL backend. The self-contained build has not: libpq's
/// Kerberos and LDAP libraries come as shared libraries only.
bool has_postgres_backend();

/// Why a postgresql:// database cannot be opened by a build without that backend.
inline constexpr std::string_view without_postgres_backend =
    "this buzzer is built without the PostgreSQL backend (the self-contained build is: "
    "libpq cannot be linked statically); use an SQLite file, or a build with PostgreSQL";

}  // namespace buzzer::store
