// SQL for operations, their results, events and idempotency keys.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/operation.hpp"
#include "store/store.hpp"

namespace buzzer::store {

/// A stored result body and its media type.
struct result_body {
    std::string body;
    std::string media_type;
};

/// A pending operation as the scheduler's ready queue needs it.
struct queued {
    std::string id;
    std::string kind;
    int priority = 0;
    core::millis run_after = 0;
    std::int64_t order = 0;  ///< insertion order (rowid): ties run oldest first
};

/// The queue entry of a pending operation that has its row.
inline queued queue_entry(const core::operation& op) {
    return {op.id, op.kind, op.priority, op.run_after, op.row};
}

/// A stored idempotency key.
struct idempotency_entry {
    std::string request;
    std::string operation_id;
};

/// Filter and page of a list request.
struct list_query {
    std::vector<core::status> statuses;
    std::optional<std::string> kind;
    std::optional<std::string> before;  ///< ids strictly older than this one
    int limit = 50;
};

/// Inserts a new operation (pending, or running when started at once) and returns its
/// insertion order, which is also its row.
std::int64_t insert_operation(connection& db, const core::operation& op);

/// Loads one operation.
std::optional<core::operation> load_operation(connection& db, std::string_view id);

/// Writes every mutable column of the loaded operation `op` (at `op.row`), and its result when
/// `result` is given (one UPDATE).
void save_operation(connection& db, const core::operation& op, const result_body* result = nullptr);

/// Moves the pending operation at `row` (whose id is `id`) to running and counts the attempt;
/// nullopt when it is not pending.
std::optional<core::operation> start_attempt(connection& db, std::int64_t row, std::string_view id,
                                             core::millis now);

/// Loads an operation's result.
std::optional<result_body> load_result(connection& db, std::string_view id);

/// Newest first; up to `limit + 1` rows so that the caller can tell whether more follow.
std::vector<core::operation> list_operations(connection& db, const list_query& q);

/// Deletes a terminal operation with its events, result and keys. Returns false when the
/// operation is missing or not terminal.
bool delete_operation(connection& db, std::string_view id);

/// Deletes terminal operations finished before `cutoff` (at most `limit`); returns how many.
int purge_finished(connection& db, core::millis cutoff, int limit);

/// Deletes idempotency keys created before `cutoff`.
void purge_keys(connection& db, core::millis cutoff);

/// Operations left `running` by a crash.
std::vector<core::operation> running_operations(connection& db);

/// Records that operation `id`, pending or running, is to be canceled (see cancel_requested).
void request_cancel(connection& db, std::string_view id);

/// Active (pending or running) operations whose cancel was requested: at start, those a
/// stopped server did not get to cancel.
std::vector<core::operation> cancel_requested(connection& db);

/// Every pending operation, in queue order.
std::vector<queued> pending_operations(connection& db);

/// Number of pending operations.
std::int64_t count_pending(connection& db);

/// Looks up an idempotency key.
std::optional<idempotency_entry> find_key(connection& db, std::string_view key);

/// Records an idempotency key.
void insert_key(connection& db, std::string_view key, std::string_view request,
                std::string_view operation_id, core::millis now);

/// Events of the given operations with `after < seq <= upto`, oldest first, at most `limit`.
std::vector<event> read_events(connection& db, const std::vector<std::string>& operation_ids,
                               std::int64_t after, std::int64_t upto, int limit);

/// The newest event id ever handed out: the newest stored one, or the high-water mark that
/// deletions of events record, whichever is larger (0 for a new database).
std::int64_t newest_event(connection& db);

}  // namespace buzzer::store

namespace buzzer::store {

/// The sequence number of an operation's terminal event (completed, failed, canceled), or 0.
std::int64_t terminal_event(connection& db, std::string_view operation_id);

}  // namespace buzzer::store
