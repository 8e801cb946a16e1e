// Files compiled into the binary: the schema migrations of both backends and the demo page.
#pragma once

#include <span>
#include <string_view>

namespace buzzer::embedded {

/// A named file compiled into the binary.
struct file {
    std::string_view name;
    std::string_view content;
};

/// The SQLite migrations, sorted by name (`0001_init.sql`, ...).
std::span<const file> migrations();

/// The PostgreSQL migrations (migrations/postgresql/), sorted by name.
std::span<const file> postgresql_migrations();

/// The web assets (`index.html`).
std::span<const file> assets();

}  // namespace buzzer::embedded
