#include "store/postgres/queries.hpp"

#include <algorithm>
#include <stdexcept>
#include <unordered_map>

#include "core/ulid.hpp"
#include "store/values.hpp"

namespace buzzer::store::postgres {
namespace {

#define BUZZER_OP_COLUMNS                                                               \
    "id, kind, status, input, priority, max_attempts, timeout_s, attempt, created_at, " \
    "started_at, finished_at, run_after, progress, error, row_id, cancel_requested, tenant"

core::operation row_to_operation(const result& r, int i) {
    core::operation op;
    op.id = r.text(i, 0);
    op.kind = r.text(i, 1);
    op.state = core::parse_status(r.text(i, 2)).value_or(core::status::failed);
    op.input = r.text(i, 3);
    op.priority = static_cast<int>(r.int64(i, 4));
    op.max_attempts = static_cast<int>(r.int64(i, 5));
    op.timeout_s = r.float64(i, 6);
    op.attempt = static_cast<int>(r.int64(i, 7));
    op.created_at = r.int64(i, 8);
    op.started_at = r.opt_int64(i, 9);
    op.finished_at = r.opt_int64(i, 10);
    op.run_after = r.int64(i, 11);
    op.progress = r.opt_text(i, 12);
    op.error = r.opt_text(i, 13);
    op.row = r.int64(i, 14);
    op.cancel_requested = r.boolean(i, 15);
    op.tenant = r.text(i, 16);
    return op;
}

std::vector<core::operation> operations_of(const result& r) {
    std::vector<core::operation> out;
    out.reserve(r.rows());
    for (int i = 0; i < r.rows(); ++i) out.push_back(row_to_operation(r, i));
    return out;
}

std::optional<core::operation> first_operation(const result& r) {
    if (r.rows() == 0) return std::nullopt;
    return row_to_operation(r, 0);
}

param opt_text_param(const std::optional<std::string>& v) {
    if (!v) return std::nullopt;
    return *v;
}

}  // namespace

std::int64_t insert_operation(connection& db, const core::operation& op, std::string_view node) {
    const param p[] = {text_param(op.id),
                       text_param(op.tenant),
                       text_param(op.kind),
                       text_param(core::to_string(op.state)),
                       text_param(op.input),
                       int_param(op.priority),
                       int_param(op.max_attempts),
                       float_param(op.timeout_s),
                       int_param(op.attempt),
                       int_param(op.created_at),
                       int_param(op.run_after),
                       opt_int_param(op.started_at),
                       op.state == core::status::running ? text_param(node) : std::nullopt};
    auto r = db.query(
        "INSERT INTO operations (id, tenant, kind, status, input, priority, max_attempts, "
        "timeout_s, attempt, created_at, run_after, started_at, node) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING row_id",
        p);
    return r.int64(0, 0);
}

void insert_operations(connection& db, std::span<const new_operation> ops) {
    if (ops.empty()) return;
    if (ops.size() == 1) {
        *ops[0].row = insert_operation(db, *ops[0].op, ops[0].node);
        return;
    }
    std::vector<param> ids, tenants, kinds, states, inputs, priorities, max_attempts, timeouts,
        attempts, created, run_after, started, nodes;
    for (const auto& n : ops) {
        const auto& op = *n.op;
        ids.push_back(text_param(op.id));
        tenants.push_back(text_param(op.tenant));
        kinds.push_back(text_param(op.kind));
        states.push_back(text_param(core::to_string(op.state)));
        inputs.push_back(text_param(op.input));
        priorities.push_back(int_param(op.priority));
        max_attempts.push_back(int_param(op.max_attempts));
        timeouts.push_back(float_param(op.timeout_s));
        attempts.push_back(int_param(op.attempt));
        created.push_back(int_param(op.created_at));
        run_after.push_back(int_param(op.run_after));
        started.push_back(opt_int_param(op.started_at));
        nodes.push_back(op.state == core::status::running ? text_param(n.node) : std::nullopt);
    }
    const param p[] = {array_param(ids),          array_param(tenants),   array_param(kinds),
                       array_param(states),       array_param(inputs),    array_param(priorities),
                       array_param(max_attempts), array_param(timeouts),  array_param(attempts),
                       array_param(created),      array_param(run_after), array_param(started),
                       array_param(nodes)};
    // Rows are numbered in the order of `ops` (the ORDER BY of an INSERT's SELECT).
    auto r = db.query(
        "INSERT INTO operations (id, tenant, kind, status, input, priority, max_attempts, "
        "timeout_s, attempt, created_at, run_after, started_at, node) "
        "SELECT id, tenant, kind, status, input, priority, max_attempts, timeout_s, attempt, "
        "created_at, run_after, started_at, node FROM unnest($1::text[], $2::text[], "
        "$3::text[], $4::text[], $5::text[], $6::int[], $7::int[], $8::float8[], $9::int[], "
        "$10::bigint[], $11::bigint[], $12::bigint[], $13::text[]) WITH ORDINALITY AS n(id, "
        "tenant, kind, status, input, priority, max_attempts, timeout_s, attempt, created_at, "
        "run_after, started_at, node, k) ORDER BY k RETURNING row_id, id",
        p);
    if (r.rows() != static_cast<int>(ops.size()))
        throw std::runtime_error("inserting operations: " + std::to_string(r.rows()) + " rows of " +
                                 std::to_string(ops.size()));
    std::unordered_map<std::string_view, std::int64_t*> rows;
    for (const auto& n : ops) rows.emplace(n.op->id, n.row);
    for (int i = 0; i < r.rows(); ++i) *rows.at(r.text(i, 1)) = r.int64(i, 0);
}

std::optional<core::operation> load_operation(connection& db, const tenant_id& tenant,
                                              std::string_view id, bool lock) {
    const param p[] = {text_param(id), text_param(tenant.name)};
    if (lock)
        return first_operation(db.query("SELECT " BUZZER_OP_COLUMNS
                                        " FROM operations WHERE id = $1 AND tenant = $2 "
                                        "FOR UPDATE",
                                        p));
    return first_operation(
        db.query("SELECT " BUZZER_OP_COLUMNS " FROM operations WHERE id = $1 AND tenant = $2", p));
}

std::optional<core::operation> load_row(connection& db, std::int64_t row, std::string_view id) {
    const param p[] = {int_param(row), text_param(id)};
    return first_operation(db.query("SELECT " BUZZER_OP_COLUMNS
                                    " FROM operations WHERE row_id = $1 AND id = $2 FOR UPDATE",
                                    p));
}

namespace {

// One UPDATE of every mutable column by row; `current` (an attempt) adds the fencing condition
// of an attempt's outcome. A requested cancel is never taken back: the caller's copy may
// predate it.
bool update_operation(connection& db, const core::operation& op, std::string_view node,
                      std::optional<int> current, const core::result_body* result) {
    if (op.row <= 0) throw std::logic_error("save_operation: operation " + op.id + " has no row");
    std::vector<param> p = {int_param(op.row),
                            text_param(core::to_string(op.state)),
                            int_param(op.attempt),
                            opt_int_param(op.started_at),
                            opt_int_param(op.finished_at),
                            int_param(op.run_after),
                            opt_text_param(op.progress),
                            opt_text_param(op.error),
                            bool_param(op.cancel_requested),
                            text_param(node),
                            int_param(current.value_or(0))};
    if (result) {
        p.push_back(bytes_param(result->body));
        p.push_back(text_param(result->media_type));
    }
#define BUZZER_SAVE_COLUMNS                                                                  \
    "UPDATE operations SET status = $2, attempt = $3, started_at = $4, finished_at = $5, "   \
    "run_after = $6, progress = $7, error = $8, cancel_requested = cancel_requested OR $9, " \
    "node = CASE WHEN $2 = 'running' THEN $10 END"
#define BUZZER_SAVE_RESULT ", result = $12, result_type = $13"
    // $11 is the attempt of `current`, or 0 (which no stored attempt of a running one is).
#define BUZZER_WHERE                                                            \
    " WHERE row_id = $1 AND ($11 = 0 OR (status = 'running' AND attempt = $11 " \
    "AND node = $10))"
    auto r = result ? db.query(BUZZER_SAVE_COLUMNS BUZZER_SAVE_RESULT BUZZER_WHERE, p)
                    : db.query(BUZZER_SAVE_COLUMNS BUZZER_WHERE, p);
#undef BUZZER_WHERE
#undef BUZZER_SAVE_RESULT
#undef BUZZER_SAVE_COLUMNS
    return r.affected() > 0;
}

}  // namespace

void save_operation(connection& db, const core::operation& op, std::string_view node,
                    const core::result_body* result) {
    update_operation(db, op, node, std::nullopt, result);
}

bool save_if_current(connection& db, const core::operation& op, int attempt, std::string_view node,
                     const core::result_body* result) {
    return update_operation(db, op, node, std::max(attempt, 1), result);
}

std::vector<bool> save_if_current(connection& db, std::span<const change> changes,
                                  std::string_view node) {
    std::vector<bool> current(changes.size(), false);
    if (changes.empty()) return current;
    std::vector<param> rows, states, attempts, started, finished, run_after, progress, errors,
        cancels, of_attempt, has_result, results, result_types;
    for (const auto& c : changes) {
        const auto& op = c.op;
        if (op.row <= 0)
            throw std::logic_error("save_if_current: operation " + op.id + " has no row");
        rows.push_back(int_param(op.row));
        states.push_back(text_param(core::to_string(op.state)));
        attempts.push_back(int_param(op.attempt));
        started.push_back(opt_int_param(op.started_at));
        finished.push_back(opt_int_param(op.finished_at));
        run_after.push_back(int_param(op.run_after));
        progress.push_back(opt_text_param(op.progress));
        errors.push_back(opt_text_param(op.error));
        cancels.push_back(bool_param(op.cancel_requested));
        of_attempt.push_back(int_param(std::max(c.attempt ? c.attempt : op.attempt, 1)));
        has_result.push_back(bool_param(c.result != nullptr));
        results.push_back(c.result ? bytes_param(c.result->body) : std::nullopt);
        result_types.push_back(c.result ? text_param(c.result->media_type) : std::nullopt);
    }
    const param p[] = {array_param(rows),     array_param(states),      array_param(attempts),
                       array_param(started),  array_param(finished),    array_param(run_after),
                       array_param(progress), array_param(errors),      array_param(cancels),
                       text_param(node),      array_param(of_attempt),  array_param(has_result),
                       array_param(results),  array_param(result_types)};
    // The fencing condition of update_operation, per row; RETURNING names the rows written.
    auto r = db.query(
        "UPDATE operations AS o SET status = u.status, attempt = u.attempt, "
        "started_at = u.started_at, finished_at = u.finished_at, run_after = u.run_after, "
        "progress = u.progress, error = u.error, "
        "cancel_requested = o.cancel_requested OR u.cancel, "
        "node = CASE WHEN u.status = 'running' THEN $10 END, "
        "result = CASE WHEN u.has_result THEN u.result ELSE o.result END, "
        "result_type = CASE WHEN u.has_result THEN u.result_type ELSE o.result_type END "
        "FROM unnest($1::bigint[], $2::text[], $3::int[], $4::bigint[], $5::bigint[], "
        "$6::bigint[], $7::text[], $8::text[], $9::boolean[], $11::int[], $12::boolean[], "
        "$13::bytea[], $14::text[]) AS u(row_id, status, attempt, started_at, finished_at, "
        "run_after, progress, error, cancel, of_attempt, has_result, result, result_type) "
        "WHERE o.row_id = u.row_id AND o.status = 'running' AND o.attempt = u.of_attempt "
        "AND o.node = $10 RETURNING o.row_id",
        p);
    std::unordered_map<std::int64_t, std::size_t> index;
    for (std::size_t i = 0; i < changes.size(); ++i) index.emplace(changes[i].op.row, i);
    for (int i = 0; i < r.rows(); ++i) current[index.at(r.int64(i, 0))] = true;
    return current;
}

void save_operations(connection& db, std::span<const core::operation> ops, std::string_view node) {
    if (ops.empty()) return;
    std::vector<param> rows, states, attempts, started, finished, run_after, progress, errors,
        cancels;
    for (const auto& op : ops) {
        if (op.row <= 0)
            throw std::logic_error("save_operations: operation " + op.id + " has no row");
        rows.push_back(int_param(op.row));
        states.push_back(text_param(core::to_string(op.state)));
        attempts.push_back(int_param(op.attempt));
        started.push_back(opt_int_param(op.started_at));
        finished.push_back(opt_int_param(op.finished_at));
        run_after.push_back(int_param(op.run_after));
        progress.push_back(opt_text_param(op.progress));
        errors.push_back(opt_text_param(op.error));
        cancels.push_back(bool_param(op.cancel_requested));
    }
    const param p[] = {array_param(rows),     array_param(states),   array_param(attempts),
                       array_param(started),  array_param(finished), array_param(run_after),
                       array_param(progress), array_param(errors),   array_param(cancels),
                       text_param(node)};
    db.query(
        "UPDATE operations AS o SET status = u.status, attempt = u.attempt, "
        "started_at = u.started_at, finished_at = u.finished_at, run_after = u.run_after, "
        "progress = u.progress, error = u.error, "
        "cancel_requested = o.cancel_requested OR u.cancel, "
        "node = CASE WHEN u.status = 'running' THEN $10 END "
        "FROM unnest($1::bigint[], $2::text[], $3::int[], $4::bigint[], $5::bigint[], "
        "$6::bigint[], $7::text[], $8::text[], $9::boolean[]) "
        "AS u(row_id, status, attempt, started_at, finished_at, run_after, progress, error, "
        "cancel) WHERE o.row_id = u.row_id",
        p);
}

std::optional<core::result_body> load_result(connection& db, std::string_view id) {
    const param p[] = {text_param(id)};
    auto r = db.query("SELECT result, result_type FROM operations WHERE id = $1", p);
    if (r.rows() == 0 || r.is_null(0, 0)) return std::nullopt;
    return core::result_body{r.bytes(0, 0), r.opt_text(0, 1).value_or("application/json")};
}

std::vector<core::operation> list_operations(connection& db, const list_query& q) {
    std::vector<param> p = {text_param(q.tenant.name)};
    auto next = [&p](param v) {
        p.push_back(std::move(v));
        return "$" + std::to_string(p.size());
    };
    std::string sql = "SELECT " BUZZER_OP_COLUMNS " FROM operations WHERE tenant = $1";
    if (!q.statuses.empty()) {
        sql += " AND status IN (";
        for (std::size_t i = 0; i < q.statuses.size(); ++i) {
            if (i) sql += ',';
            sql += next(text_param(core::to_string(q.statuses[i])));
        }
        sql += ")";
        if (std::find(q.statuses.begin(), q.statuses.end(), core::status::succeeded) ==
            q.statuses.end())
            sql += " AND status <> 'succeeded'";
    }
    if (q.kind) sql += " AND kind = " + next(text_param(*q.kind));
    if (q.before) sql += " AND id < " + next(text_param(*q.before));
    sql += " ORDER BY id DESC LIMIT " + next(int_param(q.limit + 1));
    return operations_of(db.query_text(sql, p));
}

namespace {

void delete_traces(connection& db, std::string_view id) {
    // Event ids come from the counter, which deletions leave alone: none is handed out again.
    const param p[] = {text_param(id)};
    db.query("DELETE FROM events WHERE operation_id = $1", p);
    db.query("DELETE FROM idempotency_keys WHERE operation_id = $1", p);
}

}  // namespace

bool delete_operation(connection& db, const tenant_id& tenant, std::string_view id) {
    const param p[] = {text_param(id), text_param(tenant.name)};
    auto r = db.query(
        "DELETE FROM operations WHERE id = $1 AND tenant = $2 "
        "AND status IN ('succeeded', 'failed', 'canceled')",
        p);
    if (r.affected() == 0) return false;
    delete_traces(db, id);
    return true;
}

int purge_finished(connection& db, core::millis cutoff, int limit) {
    // As in the SQLite backend: the oldest ids are walked, an operation finished before the
    // cutoff having been created before it.
    const auto below = core::ulid_floor(cutoff);
    const param p[] = {int_param(cutoff), int_param(limit), text_param(below)};
    auto r = db.query(
        "DELETE FROM operations WHERE row_id IN (SELECT row_id FROM operations "
        "WHERE id < $3 AND finished_at < $1 AND status IN ('succeeded', 'failed', 'canceled') "
        "ORDER BY id LIMIT $2) RETURNING id",
        p);
    for (int i = 0; i < r.rows(); ++i) delete_traces(db, r.text(i, 0));
    return r.rows();
}

void purge_keys(connection& db, core::millis cutoff) {
    const param p[] = {int_param(cutoff)};
    db.query("DELETE FROM idempotency_keys WHERE created_at < $1", p);
}

std::vector<core::operation> running_on(connection& db, std::string_view node) {
    const param p[] = {text_param(node)};
    return operations_of(db.query("SELECT " BUZZER_OP_COLUMNS
                                  " FROM operations WHERE status = 'running' AND node = $1 "
                                  "ORDER BY row_id FOR UPDATE",
                                  p));
}

std::vector<core::operation> cancel_requested_on(connection& db, std::string_view node) {
    const param p[] = {text_param(node)};
    return operations_of(
        db.query("SELECT " BUZZER_OP_COLUMNS
                 " FROM operations WHERE cancel_requested AND (status = 'pending' OR "
                 "(status = 'running' AND node = $1)) ORDER BY row_id FOR UPDATE",
                 p));
}

std::vector<core::queued> pending_operations(connection& db) {
    auto r = db.query(
        "SELECT id, kind, priority, run_after, row_id, tenant FROM operations "
        "WHERE status = 'pending' ORDER BY priority DESC, row_id");
    std::vector<core::queued> out;
    out.reserve(r.rows());
    for (int i = 0; i < r.rows(); ++i) {
        core::queued q{r.text(i, 0), r.text(i, 1), static_cast<int>(r.int64(i, 2)), r.int64(i, 3),
                       r.int64(i, 4)};
        q.tenant = r.text(i, 5);
        out.push_back(std::move(q));
    }
    return out;
}

namespace {

// Two-key advisory locks of the claims of a limited kind: this first key, and the kind's hash.
constexpr std::int64_t kind_lock_space = 1651864187;

// What a claim holds an operation by: its place in the queue.
bool claims_first(const core::operation& a, const core::operation& b) {
    if (a.priority != b.priority) return a.priority > b.priority;
    return a.row < b.row;
}

}  // namespace

std::vector<core::operation> claimable(connection& db, const claim_request& r, core::millis now,
                                       bool& contended) {
    contended = false;
    std::vector<core::operation> out;
    if (r.limit == 0) return out;
    const auto limit = static_cast<std::int64_t>(r.limit);
    if (!r.kinds.empty()) {
        const param p[] = {int_param(now), text_array_param(r.kinds), int_param(limit)};
        // The first `limit` of each kind (by its own index), merged below: rows of a kind
        // that the merge leaves out stay locked only until this transaction ends.
        out = operations_of(
            db.query("SELECT o.* FROM unnest($2::text[]) AS k(kind) "
                     "CROSS JOIN LATERAL "
                     "(SELECT " BUZZER_OP_COLUMNS " FROM operations WHERE status = 'pending' AND "
                     "run_after <= $1 AND kind = k.kind "
                     "ORDER BY priority DESC, row_id LIMIT $3 "
                     "FOR UPDATE SKIP LOCKED) AS o",
                     p));
    }
    // A limited kind is claimed by one node at a time (a lock that this transaction holds
    // until its commit), which counts what runs of it on every node. A node that finds the
    // lock taken leaves the kind for now instead of waiting, so that no claim waits for
    // another's batch (nor deadlocks with it).
    for (const auto& [kind, concurrency] : r.limited) {
        const param lock[] = {int_param(kind_lock_space), text_param(kind)};
        if (!db.query("SELECT pg_try_advisory_xact_lock($1::bigint::int, hashtext($2))", lock)
                 .boolean(0, 0)) {
            contended = true;
            continue;
        }
        const param count[] = {text_param(kind)};
        const auto running =
            db.query("SELECT count(*) FROM operations WHERE status = 'running' AND kind = $1",
                     count)
                .int64(0, 0);
        const auto room = std::min<std::int64_t>(limit, concurrency - running);
        if (room <= 0) continue;
        const param p[] = {int_param(now), text_param(kind), int_param(room)};
        auto more = operations_of(db.query("SELECT " BUZZER_OP_COLUMNS
                                           " FROM operations WHERE status = 'pending' AND "
                                           "run_after <= $1 AND kind = $2 "
                                           "ORDER BY priority DESC, row_id LIMIT $3 "
                                           "FOR UPDATE SKIP LOCKED",
                                           p));
        out.insert(out.end(), std::make_move_iterator(more.begin()),
                   std::make_move_iterator(more.end()));
    }
    std::sort(out.begin(), out.end(), claims_first);
    if (out.size() > r.limit) out.resize(r.limit);
    return out;
}

std::optional<core::millis> next_due(connection& db, core::millis now) {
    const param p[] = {int_param(now)};
    auto r = db.query(
        "SELECT min(run_after) FROM operations WHERE status = 'pending' AND run_after > 0 "
        "AND run_after > $1",
        p);
    return r.opt_int64(0, 0);
}

std::vector<std::string> cancels_requested(connection& db, std::string_view node) {
    const param p[] = {text_param(node)};
    auto r = db.query(
        "SELECT id FROM operations WHERE status = 'running' AND node = $1 AND cancel_requested", p);
    std::vector<std::string> out;
    for (int i = 0; i < r.rows(); ++i) out.push_back(r.text(i, 0));
    return out;
}

std::vector<std::pair<std::string, std::int64_t>> pending_per_tenant(connection& db) {
    auto r = db.query(
        "SELECT tenant, count(*) FROM operations WHERE status = 'pending' GROUP BY tenant");
    std::vector<std::pair<std::string, std::int64_t>> out;
    for (int i = 0; i < r.rows(); ++i) out.emplace_back(r.text(i, 0), r.int64(i, 1));
    return out;
}

void beat(connection& db, std::string_view node, std::string_view host, int pid) {
    const param p[] = {text_param(node), text_param(host), int_param(pid)};
    db.query(
        "INSERT INTO nodes (id, host, pid) VALUES ($1, $2, $3) "
        "ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), host = $2, pid = $3",
        p);
}

bool take_lease(connection& db, std::string_view name, std::string_view node,
                std::chrono::milliseconds ttl) {
    const param p[] = {text_param(name), text_param(node), int_param(ttl.count())};
    return db.query(
                 "INSERT INTO leases (name, node, expires_at) "
                 "VALUES ($1, $2, now() + $3 * interval '1 millisecond') "
                 "ON CONFLICT (name) DO UPDATE SET node = excluded.node, "
                 "expires_at = excluded.expires_at "
                 "WHERE leases.node = excluded.node OR leases.expires_at < now() "
                 "RETURNING node",
                 p)
               .rows() > 0;
}

bool holds_lease(connection& db, std::string_view name, std::string_view node) {
    const param p[] = {text_param(name), text_param(node)};
    return db.query(
                 "SELECT 1 FROM leases WHERE name = $1 AND node = $2 AND expires_at > now() "
                 "FOR SHARE",
                 p)
               .rows() > 0;
}

std::vector<core::operation> orphaned(connection& db, std::string_view self,
                                      std::chrono::milliseconds timeout,
                                      std::vector<std::string>& dead) {
    const param p[] = {text_param(self), int_param(timeout.count())};
    auto r = db.query(
        "SELECT id FROM nodes WHERE id <> $1 "
        "AND heartbeat_at < now() - $2 * interval '1 millisecond' FOR UPDATE SKIP LOCKED",
        p);
    dead.clear();
    for (int i = 0; i < r.rows(); ++i) dead.push_back(r.text(i, 0));
    const param q[] = {text_array_param(dead)};
    return operations_of(
        db.query("SELECT " BUZZER_OP_COLUMNS
                 " FROM operations AS o WHERE status = 'running' AND (node = ANY ($1::text[]) OR "
                 "node IS NULL OR NOT EXISTS (SELECT 1 FROM nodes AS n WHERE n.id = o.node)) "
                 "ORDER BY row_id FOR UPDATE SKIP LOCKED",
                 q));
}

void forget_nodes(connection& db, std::span<const std::string> ids) {
    if (ids.empty()) return;
    const param p[] = {text_array_param(ids)};
    db.query("DELETE FROM leases WHERE node = ANY ($1::text[])", p);
    db.query("DELETE FROM submission_counts WHERE node = ANY ($1::text[])", p);
    db.query("DELETE FROM nodes WHERE id = ANY ($1::text[])", p);
}

std::vector<std::pair<std::string, std::int64_t>> add_submission_counts(
    connection& db, std::string_view node,
    std::span<const std::pair<std::string, std::int64_t>> admitted) {
    if (!admitted.empty()) {
        std::vector<std::string> tenants, counts;
        for (const auto& [tenant, n] : admitted) {
            tenants.push_back(tenant);
            counts.push_back(std::to_string(n));
        }
        const param p[] = {text_param(node), text_array_param(tenants), text_array_param(counts)};
        db.query(
            "INSERT INTO submission_counts (node, tenant, admitted) "
            "SELECT $1, t, n FROM unnest($2::text[], $3::bigint[]) AS u (t, n) "
            "ON CONFLICT (node, tenant) DO UPDATE "
            "SET admitted = submission_counts.admitted + excluded.admitted",
            p);
    }
    const param p[] = {text_param(node)};
    auto r = db.query(
        "SELECT tenant, sum(admitted)::bigint FROM submission_counts "
        "WHERE node <> $1 GROUP BY tenant",
        p);
    std::vector<std::pair<std::string, std::int64_t>> others;
    others.reserve(r.rows());
    for (int i = 0; i < r.rows(); ++i) others.emplace_back(r.text(i, 0), r.int64(i, 1));
    return others;
}

std::optional<idempotency_entry> find_idempotency_key(connection& db, const tenant_id& tenant,
                                                      std::string_view key) {
    const param p[] = {text_param(tenant.name), text_param(key)};
    auto r = db.query(
        "SELECT request, operation_id FROM idempotency_keys WHERE tenant = $1 AND key = $2", p);
    if (r.rows() == 0) return std::nullopt;
    return idempotency_entry{r.text(0, 0), r.text(0, 1)};
}

bool insert_idempotency_key(connection& db, const tenant_id& tenant, std::string_view key,
                            std::string_view request, std::string_view operation_id,
                            core::millis now) {
    // A key another node is inserting makes this wait for its commit; then it is taken.
    const param p[] = {text_param(tenant.name), text_param(key), text_param(request),
                       text_param(operation_id), int_param(now)};
    return db.query(
                 "INSERT INTO idempotency_keys (tenant, key, request, operation_id, "
                 "created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                 p)
               .affected() > 0;
}

namespace {

std::vector<core::event> events_of(const result& r) {
    std::vector<core::event> out;
    out.reserve(r.rows());
    for (int i = 0; i < r.rows(); ++i)
        out.push_back(core::event{r.int64(i, 0), r.text(i, 1), r.text(i, 2), r.text(i, 3)});
    return out;
}

}  // namespace

std::vector<core::event> read_events(connection& db, const tenant_id& tenant,
                                     const std::vector<std::string>& operation_ids,
                                     std::int64_t after, std::int64_t upto, int limit) {
    if (operation_ids.size() == 1) {
        const param p[] = {text_param(operation_ids[0]), int_param(after), int_param(upto),
                           int_param(limit), text_param(tenant.name)};
        return events_of(
            db.query("SELECT seq, operation_id, type, data FROM events "
                     "WHERE operation_id = $1 AND seq > $2 AND seq <= $3 "
                     "AND EXISTS (SELECT 1 FROM operations WHERE id = $1 AND tenant = $5) "
                     "ORDER BY seq LIMIT $4",
                     p));
    }
    const param p[] = {text_array_param(operation_ids), int_param(after), int_param(upto),
                       int_param(limit), text_param(tenant.name)};
    return events_of(
        db.query("SELECT seq, operation_id, type, data FROM events WHERE operation_id IN "
                 "(SELECT id FROM operations WHERE tenant = $5 AND id = ANY ($1::text[])) "
                 "AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT $4",
                 p));
}

std::vector<std::optional<std::int64_t>> stream_ends(connection& db, const tenant_id& tenant,
                                                     const std::vector<std::string>& ids) {
    const param p[] = {text_array_param(ids), text_param(tenant.name)};
    // Each id is looked up on its own (the LIMIT keeps the planner from turning the lookups
    // into a join): a cached plan made while the table was small, or before it was analysed,
    // would otherwise hash all of a tenant's operations for every stream that opens.
    auto r = db.query(
        "SELECT i.n, o.status IN ('succeeded', 'failed', 'canceled'), "
        "(SELECT coalesce(max(e.seq), 0) FROM events AS e WHERE e.operation_id = o.id "
        "AND e.type IN ('completed', 'failed', 'canceled')) "
        "FROM unnest($1::text[]) WITH ORDINALITY AS i(id, n) "
        "CROSS JOIN LATERAL (SELECT id, status FROM operations "
        "WHERE id = i.id AND tenant = $2 LIMIT 1) AS o",
        p);
    std::vector<std::optional<std::int64_t>> out(ids.size());
    for (int i = 0; i < r.rows(); ++i)
        out[static_cast<std::size_t>(r.int64(i, 0) - 1)] = r.boolean(i, 1) ? r.int64(i, 2) : 0;
    return out;
}

namespace {

#define BUZZER_KEY_COLUMNS "id, tenant, role, name, kinds, created_at, expires_at, revoked_at"

api_key_record row_to_key(const result& r, int i) {
    api_key_record k;
    k.id = r.text(i, 0);
    k.tenant = r.text(i, 1);
    k.role = core::parse_role(r.text(i, 2)).value_or(core::role::read);
    k.name = r.text(i, 3);
    if (auto kinds = r.opt_text(i, 4)) k.kinds = parse_kinds(*kinds);
    k.created_at = r.int64(i, 5);
    k.expires_at = r.opt_int64(i, 6);
    k.revoked_at = r.opt_int64(i, 7);
    return k;
}

std::optional<api_key_record> first_key(const result& r) {
    if (r.rows() == 0) return std::nullopt;
    return row_to_key(r, 0);
}

// Takes the next key version; the counter's row stays locked until the commit, so versions
// increase in commit order across the nodes.
std::int64_t next_key_version(connection& db) {
    auto r = db.query(
        "UPDATE counters SET value = value + 1 WHERE name = 'key_version' RETURNING value");
    if (r.rows() == 0) throw std::runtime_error("the key_version counter is missing");
    return r.int64(0, 0);
}

}  // namespace

void insert_api_key(connection& db, const api_key_record& key, std::string_view secret_hash) {
    const auto version = next_key_version(db);
    const param p[] = {text_param(key.id),
                       text_param(key.tenant),
                       text_param(core::to_string(key.role)),
                       text_param(key.name),
                       key.kinds ? text_param(kinds_text(*key.kinds)) : std::nullopt,
                       text_param(secret_hash),
                       int_param(key.created_at),
                       opt_int_param(key.expires_at),
                       opt_int_param(key.revoked_at),
                       int_param(version)};
    db.query(
        "INSERT INTO api_keys (id, tenant, role, name, kinds, secret_hash, created_at, "
        "expires_at, revoked_at, version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        p);
}

std::optional<api_key_record> find_api_key_by_hash(connection& db, std::string_view secret_hash) {
    const param p[] = {text_param(secret_hash)};
    return first_key(
        db.query("SELECT " BUZZER_KEY_COLUMNS " FROM api_keys WHERE secret_hash = $1", p));
}

std::optional<api_key_record> find_api_key_by_id(connection& db, std::string_view id) {
    const param p[] = {text_param(id)};
    return first_key(db.query("SELECT " BUZZER_KEY_COLUMNS " FROM api_keys WHERE id = $1", p));
}

std::vector<api_key_record> list_api_keys(connection& db, const std::optional<tenant_id>& tenant) {
    const param p[] = {tenant ? text_param(tenant->name) : std::nullopt};
    auto r = db.query("SELECT " BUZZER_KEY_COLUMNS
                      " FROM api_keys WHERE revoked_at IS NULL AND ($1::text IS NULL OR "
                      "tenant = $1) ORDER BY created_at DESC, id DESC",
                      p);
    std::vector<api_key_record> out;
    for (int i = 0; i < r.rows(); ++i) out.push_back(row_to_key(r, i));
    return out;
}

bool revoke_api_key(connection& db, const std::optional<tenant_id>& tenant, std::string_view id,
                    core::millis now) {
    const param live[] = {text_param(id)};
    auto r = db.query("SELECT tenant FROM api_keys WHERE id = $1 AND revoked_at IS NULL FOR UPDATE",
                      live);
    if (r.rows() == 0) return false;
    if (tenant && r.text(0, 0) != tenant->name) return false;
    const auto version = next_key_version(db);
    const param p[] = {text_param(id), int_param(now), int_param(version)};
    db.query("UPDATE api_keys SET revoked_at = $2, version = $3 WHERE id = $1", p);
    return true;
}

key_changes api_key_changes(connection& db, std::int64_t version) {
    const param p[] = {int_param(version)};
    auto r = db.query(
        "SELECT c.value, k.id FROM counters AS c LEFT JOIN api_keys AS k "
        "ON k.version > $1 AND k.revoked_at IS NOT NULL WHERE c.name = 'key_version' "
        "ORDER BY k.version",
        p);
    key_changes out;
    for (int i = 0; i < r.rows(); ++i) {
        out.version = r.int64(i, 0);
        if (!r.is_null(i, 1)) out.revoked.push_back(r.text(i, 1));
    }
    return out;
}

std::string shared_secret(connection& db, std::string_view name, std::string_view candidate,
                          core::millis now) {
    const param p[] = {text_param(name), bytes_param(candidate), int_param(now)};
    db.query(
        "INSERT INTO shared_secrets (name, value, created_at) VALUES ($1, $2, $3) "
        "ON CONFLICT (name) DO NOTHING",
        p);
    const param q[] = {text_param(name)};
    auto r = db.query("SELECT value FROM shared_secrets WHERE name = $1", q);
    if (r.rows() == 0)
        throw std::runtime_error("shared secret " + std::string(name) + " is missing");
    return r.bytes(0, 0);
}

}  // namespace buzzer::store::postgres
