#include "store/migration_list.hpp"

#include <charconv>
#include <stdexcept>
#include <string>

namespace buzzer::store {

int migration_number(std::string_view name) {
    int n = 0;
    auto [p, ec] = std::from_chars(name.data(), name.data() + name.size(), n);
    if (ec != std::errc{} || p == name.data() || p == name.data() + name.size() || *p != '_' ||
        n <= 0)
        throw std::runtime_error("migration file name must be NNNN_name.sql: " + std::string(name));
    return n;
}

int newest_migration(std::span<const migration> migrations) {
    int expected = 1;
    for (const auto& m : migrations) {
        if (migration_number(m.name) != expected)
            throw std::runtime_error("migrations are not contiguous at " + std::string(m.name));
        ++expected;
    }
    return expected - 1;
}

schema_error schema_too_new(int found, int newest) {
    return schema_error("database schema version " + std::to_string(found) +
                        " is newer than this binary's " + std::to_string(newest) +
                        ": run a binary at least as new as the one that migrated it");
}

}  // namespace buzzer::store
