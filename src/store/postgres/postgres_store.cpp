// The PostgreSQL backend of the store: each call is one write (group-committed by the
// executor's writer threads) or one read (on a reader connection), each state change the
// lifecycle's, as in the SQLite backend. What differs is that other nodes share the database:
// rows that a write changes after reading them are locked (FOR UPDATE), an idempotency key
// that another node takes at the same moment makes this submission a replay, and an attempt's
// outcome is written only while the attempt is still this node's (its fencing token).
#include <unistd.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include "core/lifecycle.hpp"
#include "core/log.hpp"
#include "core/ulid.hpp"
#include "store/postgres/executor.hpp"
#include "store/postgres/queries.hpp"
#include "store/store.hpp"
#include "store/values.hpp"

namespace buzzer::store {
namespace postgres {
namespace {

namespace lifecycle = core::lifecycle;

// Thrown inside a submission whose idempotency key another node stored meanwhile: the
// submission is rolled back and looked up again (then it replays that node's operation).
struct key_taken {};

bool distinct_rows(std::span<const change> changes) {
    std::vector<std::int64_t> rows;
    rows.reserve(changes.size());
    for (const auto& c : changes) rows.push_back(c.op.row);
    std::sort(rows.begin(), rows.end());
    return std::adjacent_find(rows.begin(), rows.end()) == rows.end();
}

void add_events(write_context& w, const std::vector<core::event>& events) {
    for (const auto& e : events) w.add_event(e.operation_id, e.type, e.data);
}

executor::settings executor_settings(settings s) {
    executor::settings e;
    e.uri = std::move(s.path);
    e.readers = std::max(1u, s.readers);
    e.writers = std::max(1u, s.writers);
    e.max_batch = std::min<std::size_t>(s.max_batch, 1024);
    e.migrations = std::move(s.migrations);
    return e;
}

std::string node_id_of(const settings& s) {
    if (!s.node_id.empty()) return s.node_id;
    return core::make_ulid(core::now_ms());
}

std::string host_name() {
    char name[256] = {};
    if (::gethostname(name, sizeof name - 1) != 0) return "unknown";
    return name;
}

// The names of the signals nodes send each other (see executor::on_signal).
constexpr std::string_view work_signal = "w";
constexpr std::string_view cancel_signal = "c ";
// The lease of the maintenance: purge, rescue.
constexpr std::string_view maintenance_lease = "maintenance";

class postgres_store final : public store, public cluster {
  public:
    explicit postgres_store(settings s)
        : node_(node_id_of(s)), host_(host_name()), db_(executor_settings(std::move(s))) {}

    ~postgres_store() override { close(); }

    recovery open(core::millis now) override {
        recovery r;
        db_.on_commit = on_commit;
        db_.on_signal = [this](std::string_view payload) { signalled(payload); };
        db_.open([&](write_context& w) {
            r = {};
            beat(w.db, node_, host_, static_cast<int>(::getpid()));
            // What this node (by its id, when it is configured) left: its cancels answered,
            // its attempts abandoned.
            for (auto& op : cancel_requested_on(w.db, node_)) {
                if (op.state == core::status::running) r.abandoned.push_back(op.id);
                save_step(w, lifecycle::apply(std::move(op), lifecycle::canceled{now}));
            }
            for (auto& op : running_on(w.db, node_)) {
                r.abandoned.push_back(op.id);
                save_step(w, lifecycle::apply(std::move(op), lifecycle::abandoned{now}));
            }
            r.pending = pending_operations(w.db);
        });
        registered_ = true;
        return r;
    }

    void attach() override {
        db_.on_commit = on_commit;
        db_.open();
    }

    void close() override {
        db_.close();
        if (!std::exchange(registered_, false)) return;
        // Stopped cleanly: the node leaves at once, and what it still ran (outcomes it could
        // not record) is taken over by the next rescue instead of after the node timeout.
        try {
            db_.direct([&](connection& db) {
                const std::string ids[] = {node_};
                forget_nodes(db, ids);
            });
        } catch (const std::exception& e) {
            core::log(core::level::warn,
                      std::string("node ") + node_ + " not removed from the database: " + e.what());
        }
    }

    boost::asio::awaitable<submit_result> submit(core::operation op,
                                                 std::vector<core::event> events,
                                                 std::optional<idempotency_key> key) override {
        submit_result r;
        const tenant_id tenant(op.tenant);
        auto write = [&](write_context& w) {
            r = {};
            if (key) {
                if (auto found = find_idempotency_key(w.db, tenant, key->key)) {
                    r.kind = same_request(found->request, key->request) ? submit_result::replayed
                                                                        : submit_result::key_reused;
                    r.operation_id = found->operation_id;
                    return;
                }
            }
            w.insert_operation(op, node_, r.op.row);
            add_events(w, events);
            if (op.state == core::status::pending) w.signal(std::string(work_signal));
            if (key &&
                !insert_idempotency_key(w.db, tenant, key->key, key->request, op.id, op.created_at))
                throw key_taken{};
        };
        try {
            co_await db_.write(write);
        } catch (const key_taken&) {
            r = {};
        }
        if (key && r.op.row == 0 && r.operation_id.empty()) co_await db_.write(write);
        if (r.kind == submit_result::accepted) {
            const auto row = r.op.row;
            r.op = std::move(op);
            r.op.row = row;
        }
        co_return r;
    }

    boost::asio::awaitable<std::vector<claimed>> start_attempts(
        std::vector<buzzer::store::claim> claims, core::millis now) override {
        std::vector<claimed> out(claims.size());
        std::vector<executor::write_fn> writes;
        writes.reserve(claims.size());
        for (std::size_t i = 0; i < claims.size(); ++i) {
            writes.push_back([this, &out, &claims, i, now](write_context& w) {
                out[i].op.reset();
                auto op = load_row(w.db, claims[i].row, claims[i].id);
                if (!op) return;
                auto step = lifecycle::apply(std::move(*op), lifecycle::started{now});
                if (!step) return;
                save_step(w, step);
                out[i].op = std::move(step.op);
            });
        }
        auto errors = co_await db_.write_each(std::move(writes));
        for (std::size_t i = 0; i < out.size(); ++i) {
            out[i].error = errors[i];
            if (errors[i]) out[i].op.reset();
        }
        co_return out;
    }

    boost::asio::awaitable<std::vector<recorded>> record(std::span<const change> changes) override {
        std::vector<recorded> out(changes.size());
        // One statement for them all where each is of another operation; should it fail (a
        // text PostgreSQL refuses, say), each on its own, so that one does not fail the others.
        if (changes.size() > 1 && distinct_rows(changes)) {
            bool together = true;
            try {
                co_await db_.write([&](write_context& w) {
                    const auto current = save_if_current(w.db, changes, node_);
                    for (std::size_t i = 0; i < changes.size(); ++i) {
                        out[i].written = current[i];
                        if (!current[i]) continue;
                        add_events(w, changes[i].events);
                        if (changes[i].op.state == core::status::pending)
                            w.signal(std::string(work_signal));
                    }
                });
            } catch (const std::exception&) {
                together = false;
            }
            if (together) co_return out;
            out.assign(changes.size(), recorded{});
        }
        std::vector<executor::write_fn> writes;
        writes.reserve(changes.size());
        for (std::size_t i = 0; i < changes.size(); ++i) {
            writes.push_back([this, &out, changes, i](write_context& w) {
                const auto& c = changes[i];
                out[i].written = save_if_current(w.db, c.op, c.attempt ? c.attempt : c.op.attempt,
                                                 node_, c.result);
                if (!out[i].written) return;
                add_events(w, c.events);
                if (c.op.state == core::status::pending) w.signal(std::string(work_signal));
            });
        }
        auto errors = co_await db_.write_each(std::move(writes));
        for (std::size_t i = 0; i < out.size(); ++i) {
            out[i].error = errors[i];
            if (errors[i]) out[i].written = false;
        }
        co_return out;
    }

    boost::asio::awaitable<cancel_result> cancel_pending(tenant_id tenant,
                                                         std::string id) override {
        cancel_result r;
        const auto now = core::now_ms();
        co_await db_.write([&](write_context& w) {
            r = {};
            auto op = load_operation(w.db, tenant, id, true);
            if (!op) return;
            if (op->state != core::status::pending) {
                r = {cancel_result::not_pending, std::move(*op)};
                return;
            }
            auto step = lifecycle::apply(std::move(*op), lifecycle::canceled{now});
            save_step(w, step);
            r = {cancel_result::canceled, std::move(step.op)};
        });
        co_return r;
    }

    boost::asio::awaitable<void> request_cancel(tenant_id tenant, std::string id) override {
        co_await db_.write([&](write_context& w) {
            auto op = load_operation(w.db, tenant, id, true);
            if (!op) return;
            auto step = lifecycle::apply(std::move(*op), lifecycle::cancel_requested{});
            if (!step) return;
            // Only the flag: the operation stays whichever node's it is.
            const param p[] = {int_param(step.op.row)};
            w.db.query("UPDATE operations SET cancel_requested = true WHERE row_id = $1", p);
            add_events(w, step.events);
            if (step.op.state == core::status::running)
                w.signal(std::string(cancel_signal) + step.op.id);
        });
    }

    boost::asio::awaitable<delete_result> remove(tenant_id tenant, std::string id) override {
        delete_result r;
        co_await db_.write([&](write_context& w) {
            r = {};
            if (delete_operation(w.db, tenant, id)) {
                r.kind = delete_result::deleted;
            } else if (auto op = load_operation(w.db, tenant, id)) {
                r.kind = delete_result::active;
                r.state = op->state;
            }
        });
        co_return r;
    }

    boost::asio::awaitable<int> purge(core::millis finished_before, core::millis keys_before,
                                      int limit) override {
        int purged = 0;
        co_await db_.write([&](write_context& w) {
            purged = 0;
            // One node at a time purges: the lease's holder.
            if (!holds_lease(w.db, maintenance_lease, node_)) return;
            purged = purge_finished(w.db, finished_before, limit);
            purge_keys(w.db, keys_before);
        });
        co_return purged;
    }

    boost::asio::awaitable<std::optional<core::operation>> load(tenant_id tenant,
                                                                std::string id) override {
        std::optional<core::operation> op;
        co_await db_.read([&](connection& db) { op = load_operation(db, tenant, id); });
        co_return op;
    }

    boost::asio::awaitable<std::optional<operation_result>> load_result(tenant_id tenant,
                                                                        std::string id) override {
        std::optional<operation_result> r;
        co_await db_.read([&](connection& db) {
            auto op = load_operation(db, tenant, id);
            if (!op) return;
            r.emplace();
            // Results are never changed once stored: a second statement reads the same one.
            if (op->state == core::status::succeeded) r->result = postgres::load_result(db, id);
            r->op = std::move(*op);
        });
        co_return r;
    }

    boost::asio::awaitable<std::vector<core::operation>> list(list_query q) override {
        std::vector<core::operation> rows;
        co_await db_.read([&](connection& db) { rows = list_operations(db, q); });
        co_return rows;
    }

    boost::asio::awaitable<std::vector<std::optional<std::int64_t>>> stream_ends(
        tenant_id tenant, std::vector<std::string> ids) override {
        std::vector<std::optional<std::int64_t>> ends;
        co_await db_.read([&](connection& db) { ends = postgres::stream_ends(db, tenant, ids); });
        co_return ends;
    }

    boost::asio::awaitable<std::vector<core::event>> replay(tenant_id tenant,
                                                            std::vector<std::string> ids,
                                                            std::int64_t after, std::int64_t upto,
                                                            int limit) override {
        std::vector<core::event> page;
        co_await db_.read(
            [&](connection& db) { page = read_events(db, tenant, ids, after, upto, limit); });
        co_return page;
    }

    boost::asio::awaitable<void> create_key(api_key_record key, std::string secret_hash) override {
        co_await db_.write([&](write_context& w) { insert_api_key(w.db, key, secret_hash); });
    }

    boost::asio::awaitable<std::optional<api_key_record>> find_key(
        std::string secret_hash) override {
        std::optional<api_key_record> key;
        co_await db_.read([&](connection& db) { key = find_api_key_by_hash(db, secret_hash); });
        co_return key;
    }

    boost::asio::awaitable<std::optional<api_key_record>> find_key_by_id(std::string id) override {
        std::optional<api_key_record> key;
        co_await db_.read([&](connection& db) { key = find_api_key_by_id(db, id); });
        co_return key;
    }

    boost::asio::awaitable<std::vector<api_key_record>> list_keys(
        std::optional<tenant_id> tenant) override {
        std::vector<api_key_record> keys;
        co_await db_.read([&](connection& db) { keys = list_api_keys(db, tenant); });
        co_return keys;
    }

    boost::asio::awaitable<bool> revoke_key(std::optional<tenant_id> tenant, std::string id,
                                            core::millis now) override {
        bool revoked = false;
        co_await db_.write(
            [&](write_context& w) { revoked = revoke_api_key(w.db, tenant, id, now); });
        co_return revoked;
    }

    boost::asio::awaitable<key_changes> key_changes_since(std::int64_t version) override {
        key_changes changes;
        co_await db_.read([&](connection& db) { changes = api_key_changes(db, version); });
        co_return changes;
    }

    std::string shared_secret(std::string_view name, std::string candidate) override {
        std::string secret;
        db_.direct([&](connection& db) {
            secret = postgres::shared_secret(db, name, candidate, core::now_ms());
        });
        return secret;
    }

    boost::asio::awaitable<bool> writable() override { co_return co_await db_.writable(); }

    std::int64_t published_seq() const override { return db_.published_seq(); }

    const store_stats& stats() const override { return db_.stats(); }

    cluster* shared() override { return this; }

    // The cluster.

    const std::string& node_id() const override { return node_; }

    boost::asio::awaitable<claim_result> claim(claim_request r, core::millis now) override {
        claim_result out;
        co_await db_.write([&](write_context& w) {
            out = {};
            bool contended = false;
            auto ops = claimable(w.db, r, now, contended);
            out.started.reserve(ops.size());
            for (auto& op : ops) {
                auto step = lifecycle::apply(std::move(op), lifecycle::started{now});
                if (!step) continue;
                add_events(w, step.events);
                out.started.push_back(std::move(step.op));
            }
            save_operations(w.db, out.started, node_);
            out.next_due = next_due(w.db, now);
            // A kind another node was claiming is looked at again shortly.
            if (contended) out.next_due = std::min(out.next_due.value_or(now + 20), now + 20);
        });
        co_return out;
    }

    boost::asio::awaitable<std::vector<std::string>> cancels_requested() override {
        std::vector<std::string> ids;
        co_await db_.read([&](connection& db) { ids = postgres::cancels_requested(db, node_); });
        co_return ids;
    }

    boost::asio::awaitable<bool> heartbeat(std::chrono::milliseconds lease) override {
        bool held = false;
        co_await db_.write([&](write_context& w) {
            beat(w.db, node_, host_, static_cast<int>(::getpid()));
            held = take_lease(w.db, maintenance_lease, node_, lease);
        });
        co_return held;
    }

    boost::asio::awaitable<int> rescue(std::chrono::milliseconds timeout,
                                       core::millis now) override {
        int taken = 0;
        co_await db_.write([&](write_context& w) {
            taken = 0;
            if (!holds_lease(w.db, maintenance_lease, node_)) return;
            std::vector<std::string> dead;
            auto ops = orphaned(w.db, node_, timeout, dead);
            std::vector<core::operation> saved;
            saved.reserve(ops.size());
            for (auto& op : ops) {
                // As at the start of a node: a cancel that was answered ends it, any other
                // attempt is abandoned (and runs again while attempts are left).
                const bool cancel = op.cancel_requested;
                auto step = cancel ? lifecycle::apply(std::move(op), lifecycle::canceled{now})
                                   : lifecycle::apply(std::move(op), lifecycle::abandoned{now});
                if (!step) continue;
                add_events(w, step.events);
                saved.push_back(std::move(step.op));
            }
            save_operations(w.db, saved, node_);
            forget_nodes(w.db, dead);
            taken = static_cast<int>(saved.size());
            if (taken) w.signal(std::string(work_signal));
        });
        if (taken)
            core::log(core::level::warn, "took over " + std::to_string(taken) +
                                             " running operations of nodes that stopped");
        co_return taken;
    }

    boost::asio::awaitable<std::vector<std::pair<std::string, std::int64_t>>> pending_by_tenant()
        override {
        std::vector<std::pair<std::string, std::int64_t>> counts;
        co_await db_.read([&](connection& db) { counts = pending_per_tenant(db); });
        co_return counts;
    }

    boost::asio::awaitable<std::vector<std::pair<std::string, std::int64_t>>> share_submissions(
        std::vector<std::pair<std::string, std::int64_t>> admitted) override {
        std::vector<std::pair<std::string, std::int64_t>> others;
        co_await db_.write(
            [&](write_context& w) { others = add_submission_counts(w.db, node_, admitted); });
        co_return others;
    }

    boost::asio::awaitable<void> catch_up() override {
        co_await db_.read([this](connection& db) { db_.catch_up(db); });
    }

    bool reachable() const override { return db_.reachable(); }

    const pool_stats& pool() const override { return db_.pool(); }

  private:
    void signalled(std::string_view payload) {
        if (payload == work_signal) {
            if (on_work) on_work();
        } else if (payload.starts_with(cancel_signal)) {
            if (on_cancel) on_cancel(std::string(payload.substr(cancel_signal.size())));
        }
    }

    void save_step(write_context& w, const lifecycle::step& s) {
        save_operation(w.db, s.op, node_);
        add_events(w, s.events);
    }

    std::string node_;
    std::string host_;
    executor db_;
    bool registered_ = false;  ///< open() registered the node (close() removes it)
};

}  // namespace
}  // namespace postgres

std::unique_ptr<store> make_postgres_store(settings s) {
    return std::make_unique<postgres::postgres_store>(std::move(s));
}

}  // namespace buzzer::store
