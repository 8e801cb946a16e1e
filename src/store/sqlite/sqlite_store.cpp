// The SQLite backend of the store: each call is one write (group-committed by the executor's
// writer thread) or one read (on a reader connection), and each state change it makes is the
// lifecycle's.
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include "core/lifecycle.hpp"
#include "store/sqlite/executor.hpp"
#include "store/sqlite/queries.hpp"
#include "store/store.hpp"
#include "store/values.hpp"

namespace buzzer::store {
namespace sqlite {
namespace {

namespace lifecycle = core::lifecycle;

// Write functions may run more than once (a batch is run again when one of its writes fails),
// so they copy what they keep of their captures.
void add_events(write_context& w, const std::vector<core::event>& events) {
    for (const auto& e : events) w.add_event(e.operation_id, e.type, e.data);
}

// Stores what a lifecycle step made of an operation loaded in this write.
void save_step(write_context& w, const lifecycle::step& s) {
    save_operation(w.db, s.op);
    add_events(w, s.events);
}

executor::settings executor_settings(settings s) {
    executor::settings e;
    e.path = std::move(s.path);
    e.synchronous_full = s.synchronous_full;
    e.readers = s.readers;
    e.max_batch = s.max_batch;
    e.migrations = std::move(s.migrations);
    return e;
}

class sqlite_store final : public store {
  public:
    explicit sqlite_store(settings s) : db_(executor_settings(std::move(s))) {}

    ~sqlite_store() override { db_.close(); }

    recovery open(core::millis now) override {
        recovery r;
        db_.on_commit = on_commit;
        db_.open([&](write_context& w) {
            r = {};
            // Their cancel was answered: canceled now (their work stopped with the server).
            for (auto& op : cancel_requested(w.db)) {
                if (op.state == core::status::running) r.abandoned.push_back(op.id);
                save_step(w, lifecycle::apply(std::move(op), lifecycle::canceled{now}));
            }
            // A crash left them running: run again while attempts remain, else failed.
            for (auto& op : running_operations(w.db)) {
                r.abandoned.push_back(op.id);
                save_step(w, lifecycle::apply(std::move(op), lifecycle::abandoned{now}));
            }
            r.pending = pending_operations(w.db);
        });
        return r;
    }

    void attach() override {
        db_.on_commit = on_commit;
        db_.open();
    }

    void close() override { db_.close(); }

    boost::asio::awaitable<submit_result> submit(core::operation op,
                                                 std::vector<core::event> events,
                                                 std::optional<idempotency_key> key) override {
        submit_result r;
        const tenant_id tenant(op.tenant);
        co_await db_.write([&](write_context& w) {
            r = {};
            if (key) {
                if (auto found = find_idempotency_key(w.db, tenant, key->key)) {
                    r.kind = same_request(found->request, key->request) ? submit_result::replayed
                                                                        : submit_result::key_reused;
                    r.operation_id = found->operation_id;
                    return;
                }
            }
            r.op.row = insert_operation(w.db, op);
            add_events(w, events);
            if (key)
                insert_idempotency_key(w.db, tenant, key->key, key->request, op.id, op.created_at);
        });
        if (r.kind == submit_result::accepted) {
            const auto row = r.op.row;
            r.op = std::move(op);
            r.op.row = row;
        }
        co_return r;
    }

    boost::asio::awaitable<std::vector<claimed>> start_attempts(std::vector<claim> claims,
                                                                core::millis now) override {
        std::vector<claimed> out(claims.size());
        std::vector<executor::write_fn> writes;
        writes.reserve(claims.size());
        for (std::size_t i = 0; i < claims.size(); ++i) {
            writes.push_back([&out, &claims, i, now](write_context& w) {
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
        std::vector<executor::write_fn> writes;
        writes.reserve(changes.size());
        for (std::size_t i = 0; i < changes.size(); ++i) {
            writes.push_back([&out, changes, i](write_context& w) {
                const auto& c = changes[i];
                out[i].written = save_if(w.db, c.op, core::status::running, c.result);
                if (out[i].written) add_events(w, c.events);
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
            auto op = load_operation(w.db, tenant, id);
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
            auto op = load_operation(w.db, tenant, id);
            if (!op) return;
            auto step = lifecycle::apply(std::move(*op), lifecycle::cancel_requested{});
            if (step) save_step(w, step);
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
            if (op->state == core::status::succeeded) r->result = sqlite::load_result(db, id);
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
        std::vector<std::optional<std::int64_t>> ends(ids.size());
        co_await db_.read([&](connection& db) {
            for (std::size_t i = 0; i < ids.size(); ++i) {
                auto op = load_operation(db, tenant, ids[i]);
                if (!op) continue;
                ends[i] = core::is_terminal(op->state) ? terminal_event(db, ids[i]) : 0;
            }
        });
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
        // Through the writer like every write, awaited on an io_context of this call's own.
        std::string secret;
        const auto now = core::now_ms();
        boost::asio::io_context io;
        std::exception_ptr failure;
        boost::asio::co_spawn(io, db_.write([&](write_context& w) {
            secret = sqlite::shared_secret(w.db, name, candidate, now);
        }),
                              [&failure](std::exception_ptr e) { failure = e; });
        io.run();
        if (failure) std::rethrow_exception(failure);
        return secret;
    }

    boost::asio::awaitable<bool> writable() override { co_return co_await db_.writable(); }

    std::int64_t published_seq() const override { return db_.published_seq(); }

    const store_stats& stats() const override { return db_.stats(); }

  private:
    executor db_;
};

}  // namespace
}  // namespace sqlite

std::unique_ptr<store> make_sqlite_store(settings s) {
    return std::make_unique<sqlite::sqlite_store>(std::move(s));
}

}  // namespace buzzer::store
