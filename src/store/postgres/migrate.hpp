// Applies the numbered PostgreSQL migrations under an advisory lock: nodes that start together
// migrate once, the others wait for it and find the schema up to date.
#pragma once

#include <span>

#include "store/postgres/connection.hpp"
#include "store/store.hpp"

namespace buzzer::store::postgres {

/// Brings the schema to the newest of `migrations` (named `NNNN_name.sql`, contiguous from 1),
/// each in a transaction of its own. Throws when the list has a gap or the database's schema
/// is newer than the list. Returns the version.
int migrate(connection& db, std::span<const migration> migrations);

/// The schema version recorded in the database (0 for a new one).
int schema_version(connection& db);

}  // namespace buzzer::store::postgres
