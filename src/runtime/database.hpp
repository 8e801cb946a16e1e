// The store that `--database` names: a postgresql:// (or postgres://) URI selects the backend
// for many nodes, anything else is an SQLite file; each gets the schema of its own backend.
#pragma once

#include <memory>

#include "store/store.hpp"

namespace buzzer::runtime {

/// Makes (does not open) the store for `s.path`, with its backend's migrations.
std::unique_ptr<store::store> make_store(store::settings s);

}  // namespace buzzer::runtime
