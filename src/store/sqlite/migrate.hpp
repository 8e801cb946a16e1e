// Applies the numbered migrations, each in its own transaction, and records the version.
#pragma once

#include <span>

#include "store/sqlite/connection.hpp"
#include "store/store.hpp"

namespace buzzer::store::sqlite {

/// Brings the schema to the newest of `migrations` (named `NNNN_name.sql`, contiguous from 1).
/// Throws when the list has a gap or the database is newer than the list. Returns the version.
int migrate(connection& db, std::span<const migration> migrations);

/// The schema version recorded in the database (0 for a new one).
int schema_version(connection& db);

}  // namespace buzzer::store::sqlite
