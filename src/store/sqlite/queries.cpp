#include "store/sqlite/queries.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "core/ulid.hpp"
#include "store/values.hpp"

namespace buzzer::store::sqlite {
namespace {

#define BUZZER_OP_COLUMNS                                                               \
    "id, kind, status, input, priority, max_attempts, timeout_s, attempt, created_at, " \
    "started_at, finished_at, run_after, progress, error, rowid, cancel_requested, tenant"

core::operation row_to_operation(statement& s) {
    core::operation op;
    op.id = s.get_text(0);
    op.kind = s.get_text(1);
    op.state = core::parse_status(s.get_text(2)).value_or(core::status::failed);
    op.input = s.get_text(3);
    op.priority = static_cast<int>(s.get_int(4));
    op.max_attempts = static_cast<int>(s.get_int(5));
    op.timeout_s = s.get_double(6);
    op.attempt = static_cast<int>(s.get_int(7));
    op.created_at = s.get_int(8);
    op.started_at = s.get_opt_int(9);
    op.finished_at = s.get_opt_int(10);
    op.run_after = s.get_int(11);
    op.progress = s.get_opt_text(12);
    op.error = s.get_opt_text(13);
    op.row = s.get_int(14);
    op.cancel_requested = s.get_int(15) != 0;
    op.tenant = s.get_text(16);
    return op;
}

}  // namespace

std::int64_t insert_operation(connection& db, const core::operation& op) {
    auto s = db.cached(
        "INSERT INTO operations (id, kind, status, input, priority, max_attempts, timeout_s, "
        "attempt, created_at, run_after, started_at, tenant) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)");
    s->bind(1, op.id)
        .bind(2, op.kind)
        .bind(3, core::to_string(op.state))
        .bind(4, op.input)
        .bind(5, op.priority)
        .bind(6, op.max_attempts)
        .bind(7, op.timeout_s)
        .bind(8, op.attempt)
        .bind(9, op.created_at)
        .bind(10, op.run_after)
        .bind(11, op.started_at)
        .bind(12, op.tenant)
        .exec();
    return db.last_insert_rowid();
}

std::optional<core::operation> load_operation(connection& db, const tenant_id& tenant,
                                              std::string_view id) {
    auto s =
        db.cached("SELECT " BUZZER_OP_COLUMNS " FROM operations WHERE id = ?1 AND tenant = ?2");
    s->bind(1, id).bind(2, tenant.name);
    if (!s->step()) return std::nullopt;
    return row_to_operation(*s);
}

namespace {

// One UPDATE of every mutable column by row id (one index look-up fewer than by `id`); with
// `expected`, only while the stored status is that one. A requested cancel is never taken
// back: the caller's copy may predate it.
bool update_operation(connection& db, const core::operation& op,
                      std::optional<core::status> expected, const core::result_body* result) {
    if (op.row <= 0) throw std::logic_error("save_operation: operation " + op.id + " has no row");
#define BUZZER_SAVE_COLUMNS                                                                \
    "UPDATE operations SET status = ?2, attempt = ?3, started_at = ?4, finished_at = ?5, " \
    "run_after = ?6, progress = ?7, error = ?8, cancel_requested = max(cancel_requested, ?9)"
#define BUZZER_SAVE_RESULT ", result = ?10, result_type = ?11"
    auto s = expected
                 ? (result ? db.cached(BUZZER_SAVE_COLUMNS BUZZER_SAVE_RESULT
                                       " WHERE rowid = ?1 AND status = ?12")
                           : db.cached(BUZZER_SAVE_COLUMNS " WHERE rowid = ?1 AND status = ?12"))
                 : (result ? db.cached(BUZZER_SAVE_COLUMNS BUZZER_SAVE_RESULT " WHERE rowid = ?1")
                           : db.cached(BUZZER_SAVE_COLUMNS " WHERE rowid = ?1"));
#undef BUZZER_SAVE_RESULT
#undef BUZZER_SAVE_COLUMNS
    s->bind(1, op.row);
    s->bind(2, core::to_string(op.state))
        .bind(3, op.attempt)
        .bind(4, op.started_at)
        .bind(5, op.finished_at)
        .bind(6, op.run_after)
        .bind(7, op.progress)
        .bind(8, op.error)
        .bind(9, op.cancel_requested ? 1 : 0);
    if (result) s->bind_blob(10, result->body).bind(11, result->media_type);
    if (expected) s->bind(12, core::to_string(*expected));
    s->exec();
    return db.changes() > 0;
}

}  // namespace

void save_operation(connection& db, const core::operation& op, const core::result_body* result) {
    update_operation(db, op, std::nullopt, result);
}

bool save_if(connection& db, const core::operation& op, core::status expected,
             const core::result_body* result) {
    return update_operation(db, op, expected, result);
}

std::optional<core::operation> load_row(connection& db, std::int64_t row, std::string_view id) {
    auto s = db.cached("SELECT " BUZZER_OP_COLUMNS " FROM operations WHERE rowid = ?1 AND id = ?2");
    s->bind(1, row).bind(2, id);
    if (!s->step()) return std::nullopt;
    return row_to_operation(*s);
}

std::optional<core::result_body> load_result(connection& db, std::string_view id) {
    auto s = db.cached("SELECT result, result_type FROM operations WHERE id = ?1");
    s->bind(1, id);
    if (!s->step()) return std::nullopt;
    return core::result_body{s->get_text(0), s->get_opt_text(1).value_or("application/json")};
}

std::vector<core::operation> list_operations(connection& db, const list_query& q) {
    // Built per request: the filter's shape varies. Ids are ULIDs, so id order is time order.
    std::string sql = "SELECT " BUZZER_OP_COLUMNS " FROM operations WHERE tenant = ?";
    if (!q.statuses.empty()) {
        sql += " AND status IN (";
        for (std::size_t i = 0; i < q.statuses.size(); ++i) sql += i ? ",?" : "?";
        sql += ")";
        // The status index leaves succeeded operations out (migration 0004).
        if (std::find(q.statuses.begin(), q.statuses.end(), core::status::succeeded) ==
            q.statuses.end())
            sql += " AND status <> 'succeeded'";
    }
    if (q.kind) sql += " AND kind = ?";
    if (q.before) sql += " AND id < ?";
    sql += " ORDER BY id DESC LIMIT ?";
    statement s(db, sql);
    s.bind(1, q.tenant.name);
    int i = 2;
    for (auto st : q.statuses) s.bind(i++, core::to_string(st));
    if (q.kind) s.bind(i++, *q.kind);
    if (q.before) s.bind(i++, *q.before);
    s.bind(i, q.limit + 1);
    std::vector<core::operation> out;
    while (s.step()) out.push_back(row_to_operation(s));
    return out;
}

namespace {

// What deleting an operation leaves: its events and keys go, and ids are not handed out again.
void delete_traces(connection& db, std::string_view id) {
    // The newest event may be among those deleted: record the high-water mark first, so that
    // ids are not handed out again after a restart.
    db.cached(
          "INSERT INTO counters (name, value) "
          "SELECT 'event_seq', coalesce(max(seq), 0) FROM events WHERE true "
          "ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)")
        ->exec();
    db.cached("DELETE FROM events WHERE operation_id = ?1")->bind(1, id).exec();
    db.cached("DELETE FROM idempotency_keys WHERE operation_id = ?1")->bind(1, id).exec();
}

// Deletes terminal operation `id` whatever its tenant (the retention purge).
bool delete_any(connection& db, std::string_view id) {
    auto del = db.cached(
        "DELETE FROM operations WHERE id = ?1 AND status IN ('succeeded', 'failed', 'canceled')");
    del->bind(1, id).exec();
    if (db.changes() == 0) return false;
    delete_traces(db, id);
    return true;
}

}  // namespace

bool delete_operation(connection& db, const tenant_id& tenant, std::string_view id) {
    auto del = db.cached(
        "DELETE FROM operations WHERE id = ?1 AND tenant = ?2 "
        "AND status IN ('succeeded', 'failed', 'canceled')");
    del->bind(1, id).bind(2, tenant.name).exec();
    if (db.changes() == 0) return false;
    delete_traces(db, id);
    return true;
}

int purge_finished(connection& db, core::millis cutoff, int limit) {
    std::vector<std::string> ids;
    {
        // An operation finished before the cutoff was created before it, and ids sort by their
        // creation time: the oldest ids are walked (the id index), no index of finish times
        // is kept up to date for this. What it passes over are old operations that are still
        // active or finished since, few and soon purged themselves.
        const auto below = core::ulid_floor(cutoff);
        auto s = db.cached(
            "SELECT id FROM operations WHERE id < ?3 AND finished_at < ?1 "
            "AND status IN ('succeeded', 'failed', 'canceled') ORDER BY id LIMIT ?2");
        s->bind(1, cutoff).bind(2, limit).bind(3, std::string_view(below));
        while (s->step()) ids.push_back(s->get_text(0));
    }
    for (const auto& id : ids) delete_any(db, id);
    return static_cast<int>(ids.size());
}

void purge_keys(connection& db, core::millis cutoff) {
    db.cached("DELETE FROM idempotency_keys WHERE created_at < ?1")->bind(1, cutoff).exec();
}

std::vector<core::operation> running_operations(connection& db) {
    auto s = db.cached(
        "SELECT " BUZZER_OP_COLUMNS
        " FROM operations WHERE status = 'running' AND status <> 'succeeded' ORDER BY rowid");
    std::vector<core::operation> out;
    while (s->step()) out.push_back(row_to_operation(*s));
    return out;
}

std::vector<core::operation> cancel_requested(connection& db) {
    auto s = db.cached("SELECT " BUZZER_OP_COLUMNS
                       " FROM operations WHERE status IN ('pending', 'running') "
                       "AND status <> 'succeeded' AND cancel_requested = 1 ORDER BY rowid");
    std::vector<core::operation> out;
    while (s->step()) out.push_back(row_to_operation(*s));
    return out;
}

std::vector<core::queued> pending_operations(connection& db) {
    auto s = db.cached(
        "SELECT id, kind, priority, run_after, rowid, tenant FROM operations "
        "WHERE status = 'pending' AND status <> 'succeeded' "
        "ORDER BY priority DESC, rowid");
    std::vector<core::queued> out;
    while (s->step())
        out.push_back(core::queued{s->get_text(0), s->get_text(1), static_cast<int>(s->get_int(2)),
                                   s->get_int(3), s->get_int(4), s->get_text(5)});
    return out;
}

std::int64_t count_pending(connection& db) {
    auto s = db.cached(
        "SELECT count(*) FROM operations WHERE status = 'pending' AND status <> 'succeeded'");
    s->step();
    return s->get_int(0);
}

std::optional<idempotency_entry> find_idempotency_key(connection& db, const tenant_id& tenant,
                                                      std::string_view key) {
    auto s = db.cached(
        "SELECT request, operation_id FROM idempotency_keys WHERE tenant = ?1 AND key = ?2");
    s->bind(1, tenant.name).bind(2, key);
    if (!s->step()) return std::nullopt;
    return idempotency_entry{s->get_text(0), s->get_text(1)};
}

void insert_idempotency_key(connection& db, const tenant_id& tenant, std::string_view key,
                            std::string_view request, std::string_view operation_id,
                            core::millis now) {
    auto s = db.cached(
        "INSERT INTO idempotency_keys (tenant, key, request, operation_id, created_at) "
        "VALUES (?1, ?2, ?3, ?4, ?5)");
    s->bind(1, tenant.name).bind(2, key).bind(3, request).bind(4, operation_id).bind(5, now);
    s->exec();
}

std::vector<core::event> read_events(connection& db, const tenant_id& tenant,
                                     const std::vector<std::string>& operation_ids,
                                     std::int64_t after, std::int64_t upto, int limit) {
    std::vector<core::event> out;
    if (operation_ids.empty()) return out;
    // Events carry no tenant: those of operations of other tenants are left out by their
    // operation (the subquery does not depend on the event row and runs once).
    if (operation_ids.size() == 1) {
        auto s = db.cached(
            "SELECT seq, operation_id, type, data FROM events "
            "WHERE operation_id = ?1 AND seq > ?2 AND seq <= ?3 "
            "AND EXISTS (SELECT 1 FROM operations WHERE id = ?1 AND tenant = ?5) "
            "ORDER BY seq LIMIT ?4");
        s->bind(1, operation_ids[0]).bind(2, after).bind(3, upto).bind(4, limit);
        s->bind(5, tenant.name);
        while (s->step())
            out.push_back(
                core::event{s->get_int(0), s->get_text(1), s->get_text(2), s->get_text(3)});
        return out;
    }
    std::string sql =
        "SELECT seq, operation_id, type, data FROM events WHERE operation_id IN "
        "(SELECT id FROM operations WHERE tenant = ? AND id IN (";
    for (std::size_t i = 0; i < operation_ids.size(); ++i) sql += i ? ",?" : "?";
    sql += ")) AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?";
    statement s(db, sql);
    s.bind(1, tenant.name);
    int i = 2;
    for (const auto& id : operation_ids) s.bind(i++, id);
    s.bind(i++, after);
    s.bind(i++, upto);
    s.bind(i, limit);
    while (s.step())
        out.push_back(core::event{s.get_int(0), s.get_text(1), s.get_text(2), s.get_text(3)});
    return out;
}

std::int64_t newest_event(connection& db) {
    auto s = db.cached(
        "SELECT max(coalesce((SELECT max(seq) FROM events), 0), "
        "coalesce((SELECT value FROM counters WHERE name = 'event_seq'), 0))");
    s->step();
    return s->get_int(0);
}

std::int64_t terminal_event(connection& db, std::string_view operation_id) {
    auto s = db.cached(
        "SELECT coalesce(max(seq), 0) FROM events WHERE operation_id = ?1 "
        "AND type IN ('completed', 'failed', 'canceled')");
    s->bind(1, operation_id);
    s->step();
    return s->get_int(0);
}

namespace {

#define BUZZER_KEY_COLUMNS "id, tenant, role, name, kinds, created_at, expires_at, revoked_at"

api_key_record row_to_key(statement& s) {
    api_key_record k;
    k.id = s.get_text(0);
    k.tenant = s.get_text(1);
    // The table allows only the three roles; anything else would get the least of them.
    k.role = core::parse_role(s.get_text(2)).value_or(core::role::read);
    k.name = s.get_text(3);
    if (auto kinds = s.get_opt_text(4)) k.kinds = parse_kinds(*kinds);
    k.created_at = s.get_int(5);
    k.expires_at = s.get_opt_int(6);
    k.revoked_at = s.get_opt_int(7);
    return k;
}

// Takes the next key version. Inside the write's transaction, which holds the database's write
// lock: versions increase in commit order across every process on the database.
std::int64_t next_key_version(connection& db) {
    auto s = db.cached(
        "UPDATE counters SET value = value + 1 WHERE name = 'key_version' RETURNING value");
    if (!s->step()) throw std::runtime_error("the key_version counter is missing");
    return s->get_int(0);
}

}  // namespace

void insert_api_key(connection& db, const api_key_record& key, std::string_view secret_hash) {
    const auto version = next_key_version(db);
    std::optional<std::string> kinds;
    if (key.kinds) kinds = kinds_text(*key.kinds);
    auto s = db.cached(
        "INSERT INTO api_keys (id, tenant, role, name, kinds, secret_hash, created_at, "
        "expires_at, revoked_at, version) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)");
    s->bind(1, key.id)
        .bind(2, key.tenant)
        .bind(3, core::to_string(key.role))
        .bind(4, key.name)
        .bind(5, kinds)
        .bind(6, secret_hash)
        .bind(7, key.created_at)
        .bind(8, key.expires_at)
        .bind(9, key.revoked_at)
        .bind(10, version)
        .exec();
}

std::optional<api_key_record> find_api_key_by_hash(connection& db, std::string_view secret_hash) {
    auto s = db.cached("SELECT " BUZZER_KEY_COLUMNS " FROM api_keys WHERE secret_hash = ?1");
    s->bind(1, secret_hash);
    if (!s->step()) return std::nullopt;
    return row_to_key(*s);
}

std::optional<api_key_record> find_api_key_by_id(connection& db, std::string_view id) {
    auto s = db.cached("SELECT " BUZZER_KEY_COLUMNS " FROM api_keys WHERE id = ?1");
    s->bind(1, id);
    if (!s->step()) return std::nullopt;
    return row_to_key(*s);
}

std::vector<api_key_record> list_api_keys(connection& db, const std::optional<tenant_id>& tenant) {
    auto s = tenant ? db.cached("SELECT " BUZZER_KEY_COLUMNS
                                " FROM api_keys WHERE tenant = ?1 AND revoked_at IS NULL "
                                "ORDER BY created_at DESC, id DESC")
                    : db.cached("SELECT " BUZZER_KEY_COLUMNS
                                " FROM api_keys WHERE revoked_at IS NULL "
                                "ORDER BY created_at DESC, id DESC");
    if (tenant) s->bind(1, tenant->name);
    std::vector<api_key_record> out;
    while (s->step()) out.push_back(row_to_key(*s));
    return out;
}

bool revoke_api_key(connection& db, const std::optional<tenant_id>& tenant, std::string_view id,
                    core::millis now) {
    {
        auto live = db.cached("SELECT tenant FROM api_keys WHERE id = ?1 AND revoked_at IS NULL");
        live->bind(1, id);
        if (!live->step()) return false;
        if (tenant && live->get_text(0) != tenant->name) return false;
    }
    const auto version = next_key_version(db);
    auto s = db.cached("UPDATE api_keys SET revoked_at = ?2, version = ?3 WHERE id = ?1");
    s->bind(1, id).bind(2, now).bind(3, version).exec();
    return true;
}

key_changes api_key_changes(connection& db, std::int64_t version) {
    // One statement, one snapshot: no revocation can fall between the list and the version.
    auto s = db.cached(
        "SELECT c.value, k.id FROM counters AS c LEFT JOIN api_keys AS k "
        "ON k.version > ?1 AND k.revoked_at IS NOT NULL WHERE c.name = 'key_version' "
        "ORDER BY k.version");
    s->bind(1, version);
    key_changes out;
    while (s->step()) {
        out.version = s->get_int(0);
        if (!s->is_null(1)) out.revoked.push_back(s->get_text(1));
    }
    return out;
}

std::string shared_secret(connection& db, std::string_view name, std::string_view candidate,
                          core::millis now) {
    db.cached(
          "INSERT INTO shared_secrets (name, value, created_at) VALUES (?1, ?2, ?3) "
          "ON CONFLICT (name) DO NOTHING")
        ->bind(1, name)
        .bind(2, candidate)
        .bind(3, now)
        .exec();
    auto s = db.cached("SELECT value FROM shared_secrets WHERE name = ?1");
    s->bind(1, name);
    if (!s->step()) throw std::runtime_error("shared secret " + std::string(name) + " is missing");
    return s->get_text(0);
}

}  // namespace buzzer::store::sqlite
