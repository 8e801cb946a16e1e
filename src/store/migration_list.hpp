// What both backends' migrations share: the numbering of `NNNN_name.sql` files.
#pragma once

#include <span>
#include <string_view>

#include "store/store.hpp"

namespace buzzer::store {

/// The number of a migration named `NNNN_name.sql`; throws for another name.
int migration_number(std::string_view name);

/// The newest version of `migrations`; throws unless they are numbered contiguously from 1.
int newest_migration(std::span<const migration> migrations);

/// The error of a database whose schema (`found`) is newer than this binary's (`newest`).
schema_error schema_too_new(int found, int newest);

}  // namespace buzzer::store
