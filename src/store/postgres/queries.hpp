// The SQL of the PostgreSQL backend: operations, their results, events and idempotency keys,
// API keys and shared secrets, nodes and leases. Queries the API makes are confined to a
// tenant. An attempt's fencing token is the operation's (attempt, node): outcome writes
// require both to be the writer's.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/event.hpp"
#include "core/operation.hpp"
#include "store/postgres/connection.hpp"
#include "store/store.hpp"

namespace buzzer::store::postgres {

/// A stored idempotency key.
struct idempotency_entry {
    std::string request;
    std::string operation_id;
};

/// Inserts a new operation (running on `node` when started at once); returns its row.
std::int64_t insert_operation(connection& db, const core::operation& op, std::string_view node);

/// An operation to insert with others (running on `node` when started at once); `*row` is
/// set to its row once inserted.
struct new_operation {
    const core::operation* op;
    std::string_view node;
    std::int64_t* row;
};

/// Inserts `ops` in one statement, in their order, and sets their rows.
void insert_operations(connection& db, std::span<const new_operation> ops);

/// Loads one operation of `tenant`; with `lock`, locks its row until the transaction ends.
std::optional<core::operation> load_operation(connection& db, const tenant_id& tenant,
                                              std::string_view id, bool lock = false);

/// Loads (and locks) the operation at `row`, whose id is `id`.
std::optional<core::operation> load_row(connection& db, std::int64_t row, std::string_view id);

/// Writes every mutable column of `op` (at `op.row`), and its result when given. A running
/// operation is marked as `node`'s, any other as nobody's. A stored cancel request stays.
void save_operation(connection& db, const core::operation& op, std::string_view node,
                    const core::result_body* result = nullptr);

/// Like save_operation for an attempt's outcome: only while the stored operation is running
/// attempt `attempt` on `node`; returns whether it was.
bool save_if_current(connection& db, const core::operation& op, int attempt, std::string_view node,
                     const core::result_body* result);

/// Like save_if_current for each of `changes`, in one statement (their rows distinct);
/// returns whether each was current.
std::vector<bool> save_if_current(connection& db, std::span<const change> changes,
                                  std::string_view node);

/// Like save_operation for each of `ops`, without results, in one statement.
void save_operations(connection& db, std::span<const core::operation> ops, std::string_view node);

std::optional<core::result_body> load_result(connection& db, std::string_view id);
std::vector<core::operation> list_operations(connection& db, const list_query& q);
bool delete_operation(connection& db, const tenant_id& tenant, std::string_view id);
int purge_finished(connection& db, core::millis cutoff, int limit);
void purge_keys(connection& db, core::millis cutoff);

/// Running operations of `node` (locked).
std::vector<core::operation> running_on(connection& db, std::string_view node);
/// Active operations whose cancel was requested, of `node` when it runs them (locked).
std::vector<core::operation> cancel_requested_on(connection& db, std::string_view node);
/// Every pending operation, in queue order.
std::vector<core::queued> pending_operations(connection& db);

/// The pending operations a claim takes (see claim_request), due at `now`, in claim order,
/// locked; rows that other transactions hold are skipped. A limited kind that another node is
/// claiming at this moment is left out, and `contended` set.
std::vector<core::operation> claimable(connection& db, const claim_request& r, core::millis now,
                                       bool& contended);
/// When the first pending operation delayed past `now` is due.
std::optional<core::millis> next_due(connection& db, core::millis now);
/// The ids of the operations running on `node` whose cancel was requested.
std::vector<std::string> cancels_requested(connection& db, std::string_view node);
/// How many operations each tenant has pending.
std::vector<std::pair<std::string, std::int64_t>> pending_per_tenant(connection& db);

/// Registers `node`, or renews its heart-beat (the database's clock).
void beat(connection& db, std::string_view node, std::string_view host, int pid);
/// Takes lease `name` for `ttl` unless another node holds it; whether `node` holds it now.
bool take_lease(connection& db, std::string_view name, std::string_view node,
                std::chrono::milliseconds ttl);
/// Whether `node` holds lease `name`; when it does, nobody takes it before this transaction
/// ends.
bool holds_lease(connection& db, std::string_view name, std::string_view node);
/// The running operations (locked) of nodes other than `self` whose heart-beat is older than
/// `timeout`, or of no registered node; those nodes' ids go to `dead`.
std::vector<core::operation> orphaned(connection& db, std::string_view self,
                                      std::chrono::milliseconds timeout,
                                      std::vector<std::string>& dead);
/// Forgets nodes, and what they held.
void forget_nodes(connection& db, std::span<const std::string> ids);

/// Adds `admitted` (tenant, submissions) to this node's counts; returns the counts of every
/// other node, summed per tenant.
std::vector<std::pair<std::string, std::int64_t>> add_submission_counts(
    connection& db, std::string_view node,
    std::span<const std::pair<std::string, std::int64_t>> admitted);

std::optional<idempotency_entry> find_idempotency_key(connection& db, const tenant_id& tenant,
                                                      std::string_view key);
/// Records a key of `tenant` unless it exists (another node's race): whether it was new.
bool insert_idempotency_key(connection& db, const tenant_id& tenant, std::string_view key,
                            std::string_view request, std::string_view operation_id,
                            core::millis now);

std::vector<core::event> read_events(connection& db, const tenant_id& tenant,
                                     const std::vector<std::string>& operation_ids,
                                     std::int64_t after, std::int64_t upto, int limit);
/// For each of `ids`: none when `tenant` has no such operation, else its terminal event's id
/// (0 while active). One statement: one snapshot.
std::vector<std::optional<std::int64_t>> stream_ends(connection& db, const tenant_id& tenant,
                                                     const std::vector<std::string>& ids);

void insert_api_key(connection& db, const api_key_record& key, std::string_view secret_hash);
std::optional<api_key_record> find_api_key_by_hash(connection& db, std::string_view secret_hash);
std::optional<api_key_record> find_api_key_by_id(connection& db, std::string_view id);
std::vector<api_key_record> list_api_keys(connection& db, const std::optional<tenant_id>& tenant);
bool revoke_api_key(connection& db, const std::optional<tenant_id>& tenant, std::string_view id,
                    core::millis now);
key_changes api_key_changes(connection& db, std::int64_t version);
std::string shared_secret(connection& db, std::string_view name, std::string_view candidate,
                          core::millis now);

}  // namespace buzzer::store::postgres
