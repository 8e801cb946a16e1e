// The database libraries the store runs with.
#pragma once

#include <string>

namespace buzzer::store {

/// Their versions as they report themselves: SQLite's (e.g. "3.40.1") and libpq's ("15.14").
struct client_libraries {
    std::string sqlite;
    std::string libpq;
};
client_libraries client_library_versions();

}  // namespace buzzer::store
