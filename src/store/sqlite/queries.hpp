// The SQL of the SQLite backend: operations, their results, events and idempotency keys, API
// keys and shared secrets. Queries the API makes are confined to a tenant.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/event.hpp"
#include "core/operation.hpp"
#include "store/sqlite/connection.hpp"
#include "store/store.hpp"

namespace buzzer::store::sqlite {

/// A stored idempotency key.
struct idempotency_entry {
    std::string request;
    std::string operation_id;
};

/// Inserts a new operation (pending, or running when started at once) and returns its
/// insertion order, which is also its row.
std::int64_t insert_operation(connection& db, const core::operation& op);

/// Loads one operation of `tenant`.
std::optional<core::operation> load_operation(connection& db, const tenant_id& tenant,
                                              std::string_view id);

/// Writes every mutable column of the loaded operation `op` (at `op.row`), and its result when
/// `result` is given (one UPDATE). A stored cancel request stays.
void save_operation(connection& db, const core::operation& op,
                    const core::result_body* result = nullptr);

/// Loads the operation at `row` (whose id is `id`).
std::optional<core::operation> load_row(connection& db, std::int64_t row, std::string_view id);

/// Like save_operation, only while the stored operation is in state `expected`; returns
/// whether it was.
bool save_if(connection& db, const core::operation& op, core::status expected,
             const core::result_body* result = nullptr);

/// Loads an operation's result (of an operation loaded within its tenant).
std::optional<core::result_body> load_result(connection& db, std::string_view id);

/// The operations of `q.tenant`, newest first; up to `limit + 1` rows so that the caller can
/// tell whether more follow.
std::vector<core::operation> list_operations(connection& db, const list_query& q);

/// Deletes a terminal operation of `tenant` with its events, result and keys. Returns false
/// when the operation is missing, of another tenant or not terminal.
bool delete_operation(connection& db, const tenant_id& tenant, std::string_view id);

/// Deletes terminal operations (of every tenant) finished before `cutoff` (at most `limit`);
/// returns how many.
int purge_finished(connection& db, core::millis cutoff, int limit);

/// Deletes idempotency keys created before `cutoff`.
void purge_keys(connection& db, core::millis cutoff);

/// Operations left `running` by a crash.
std::vector<core::operation> running_operations(connection& db);

/// Active (pending or running) operations whose cancel was requested: at start, those a
/// stopped server did not get to cancel.
std::vector<core::operation> cancel_requested(connection& db);

/// Every pending operation (of every tenant), in queue order.
std::vector<core::queued> pending_operations(connection& db);

/// Number of pending operations.
std::int64_t count_pending(connection& db);

/// Looks up an idempotency key of `tenant`.
std::optional<idempotency_entry> find_idempotency_key(connection& db, const tenant_id& tenant,
                                                      std::string_view key);

/// Records an idempotency key of `tenant`.
void insert_idempotency_key(connection& db, const tenant_id& tenant, std::string_view key,
                            std::string_view request, std::string_view operation_id,
                            core::millis now);

/// Events of those of the given operations that are of `tenant`, with `after < seq <= upto`,
/// oldest first, at most `limit`.
std::vector<core::event> read_events(connection& db, const tenant_id& tenant,
                                     const std::vector<std::string>& operation_ids,
                                     std::int64_t after, std::int64_t upto, int limit);

/// The newest event id ever handed out: the newest stored one, or the high-water mark that
/// deletions of events record, whichever is larger (0 for a new database).
std::int64_t newest_event(connection& db);

/// The sequence number of an operation's terminal event (completed, failed, canceled), or 0.
std::int64_t terminal_event(connection& db, std::string_view operation_id);

/// Stores an API key and the hash of its secret, stamped with the next key version.
void insert_api_key(connection& db, const api_key_record& key, std::string_view secret_hash);

/// The API key whose secret has this hash, revoked ones too.
std::optional<api_key_record> find_api_key_by_hash(connection& db, std::string_view secret_hash);

/// The API key with this id, revoked ones too.
std::optional<api_key_record> find_api_key_by_id(connection& db, std::string_view id);

/// The keys not revoked of `tenant` (of all when none), newest first.
std::vector<api_key_record> list_api_keys(connection& db, const std::optional<tenant_id>& tenant);

/// Revokes a live key (of `tenant` when given), stamped with the next key version; whether
/// there was one.
bool revoke_api_key(connection& db, const std::optional<tenant_id>& tenant, std::string_view id,
                    core::millis now);

/// The keys revoked after key version `version`, and the newest key version (one snapshot).
key_changes api_key_changes(connection& db, std::int64_t version);

/// The secret stored under `name`, after storing `candidate` there when there was none.
std::string shared_secret(connection& db, std::string_view name, std::string_view candidate,
                          core::millis now);

}  // namespace buzzer::store::sqlite
