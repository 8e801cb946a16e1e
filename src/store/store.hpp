// The store: where operations, their results, their event log and idempotency keys are kept,
// with the API keys and shared secrets of access control. The API and the scheduler speak to it
// in the domain's words (submit, claim, record, replay, list); how a backend keeps them (SQL,
// threads, connections) stays behind this interface.
//
// What every backend guarantees:
// - Durable before resumed: a write's coroutine resumes only once its changes are durable
//   (committed, and with synchronous_full fsynced), or with the write's exception when they
//   are not; nothing is ever reported as done that a crash could take back.
// - Atomic per call: the rows and events of one write are committed together or not at all.
//   A call that takes several items writes each as a write of its own (one failing does not
//   undo the others) and reports each item's outcome.
// - Event ids are global, increasing in commit order, and never reused, not even after the
//   newest events are deleted; ids of rolled-back writes may be skipped (gaps are allowed).
// - `on_commit` receives every committed event once, in id order, after it is durable and
//   before any writer that wrote it is resumed; `published_seq()` is the newest id handed
//   over. A replay up to `published_seq()` and a subscription made before it together see
//   every event once.
// - Reads see a consistent snapshot of everything durable when they start.
// - Tenants: every operation belongs to one (`operation::tenant`). Each call the API makes
//   about operations takes a `tenant_id` and is confined to that tenant: an operation of
//   another tenant is answered exactly as a missing one (nullopt, `missing`, no stream end, no
//   events), and idempotency keys are looked up within the tenant. Event ids stay global. Only
//   the scheduler's calls (start_attempts, record, purge, open) cross tenants.
// - Other processes may open the same database (attach()): what they commit is seen by the
//   next read, and writes of both wait for each other instead of failing at once.
#pragma once

#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/event.hpp"
#include "core/histogram.hpp"
#include "core/operation.hpp"
#include "core/principal.hpp"

namespace buzzer::store {

/// A failure of the database. `unavailable()`: it cannot take requests now but may later
/// (a full disk, an I/O error, a read-only file, a lock held elsewhere): worth a retry.
class database_error : public std::runtime_error {
  public:
    database_error(const std::string& what, bool unavailable)
        : std::runtime_error(what), unavailable_(unavailable) {}
    /// Whether a later retry may succeed.
    bool unavailable() const noexcept { return unavailable_; }

  private:
    bool unavailable_;
};

/// The database's schema is newer than the binary's migrations: it cannot be used.
class schema_error : public database_error {
  public:
    explicit schema_error(const std::string& what) : database_error(what, false) {}
};

/// A schema migration: `NNNN_name.sql` and its statements.
struct migration {
    std::string_view name;
    std::string_view sql;
};

/// The tenant a call is confined to. A type of its own, so that it cannot be passed where an
/// operation id goes (both are text).
struct tenant_id {
    explicit tenant_id(std::string_view name) : name(name) {}
    std::string name;
};

/// How to open the store.
struct settings {
    std::string path;                   ///< the SQLite database file, or PostgreSQL's URI
    std::string node_id;                ///< PostgreSQL: this node's id (none: a new one)
    bool synchronous_full = true;       ///< fsync every commit before anybody is told of it
    unsigned readers = 2;               ///< reader threads (connections)
    unsigned writers = 2;               ///< PostgreSQL: writer threads (connections)
    std::size_t max_batch = 4096;       ///< writes in one group commit at most
    std::vector<migration> migrations;  ///< the schema, in order (contiguous from 0001)
};

/// Counters of the store, for /metrics.
struct store_stats {
    std::atomic<std::uint64_t> batches{0};
    std::atomic<std::uint64_t> writes{0};
    std::atomic<std::uint64_t> reads{0};
    std::atomic<std::uint64_t> write_errors{0};
    std::atomic<std::uint64_t> syncs{0};
    std::atomic<std::uint64_t> checkpoints{0};
    /// A write from its arrival in the queue to its caller being resumed (queue wait, the
    /// group commit and the fsync that covers it).
    core::histogram write_latency;
    /// One fsync of the log.
    core::histogram sync_latency;
};

/// What open() found and did: the queue to load, and the attempts a stopped server left.
struct recovery {
    std::vector<core::queued> pending;   ///< every pending operation, in queue order
    std::vector<std::string> abandoned;  ///< ids of the operations that were running
};

/// An idempotency key with the canonical form of its request's body.
struct idempotency_key {
    std::string key;
    std::string request;
};

/// What a submission came to.
struct submit_result {
    enum kind_t {
        accepted,   ///< stored: `op` is the operation as stored, its row set
        replayed,   ///< the key was used before with the same body: `operation_id` is its
        key_reused  ///< the key was used before with another body: nothing stored
    } kind = accepted;
    core::operation op;
    std::string operation_id;
};

/// An operation as stored, with its result once it has succeeded.
struct operation_result {
    core::operation op;
    std::optional<core::result_body> result;  ///< set when `op` succeeded
};

/// What a cancel of a pending operation came to.
struct cancel_result {
    enum kind_t {
        canceled,     ///< it was pending and is canceled now
        not_pending,  ///< it is running or finished: unchanged
        missing       ///< there is no such operation
    } kind = missing;
    core::operation op;  ///< as it is afterwards
};

/// What a delete came to.
struct delete_result {
    enum kind_t { deleted, missing, active } kind = missing;
    core::status state = core::status::pending;  ///< for `active`: the operation's state
};

/// A pending operation the scheduler claims: its id and handle.
struct claim {
    std::string id;
    std::int64_t row = 0;
};

/// What a claim came to: the operation now running, nothing (it was no longer pending), or
/// the write's failure (it is still pending).
struct claimed {
    std::optional<core::operation> op;
    std::exception_ptr error;
};

/// A change the lifecycle computed for an operation the caller holds as running: its new
/// state, its events and, for a success, its result. A view: what it refers to must stay alive
/// until the record() that takes it resumes.
struct change {
    const core::operation& op;  ///< after the change; `row` set
    const std::vector<core::event>& events;
    const core::result_body* result = nullptr;
    /// The attempt the change is of, which a backend shared by many nodes checks is still
    /// current; 0: `op.attempt` (right for every change but a hand-back, which takes it back).
    int attempt = 0;
};

/// What recording a change came to: written, skipped (the stored operation was no longer
/// running), or failed with `error` (nothing written).
struct recorded {
    bool written = false;
    std::exception_ptr error;
};

/// Filter and page of a list request, within one tenant.
struct list_query {
    explicit list_query(tenant_id tenant) : tenant(std::move(tenant)) {}
    tenant_id tenant;
    std::vector<core::status> statuses;
    std::optional<std::string> kind;
    std::optional<std::string> before;  ///< ids strictly older than this one
    int limit = 50;
};

/// An API key as stored; its secret is kept only as a hash, and never here.
struct api_key_record {
    std::string id;
    std::string tenant;
    core::role role = core::role::read;
    std::string name;
    std::optional<std::vector<std::string>> kinds;  ///< the kinds it may submit; none: every kind
    core::millis created_at = 0;
    std::optional<core::millis> expires_at;  ///< none: never
    std::optional<core::millis> revoked_at;  ///< none: live
};

/// What changed among API keys since a version: the ids revoked after it, and the newest
/// version (to ask from next time).
struct key_changes {
    std::int64_t version = 0;
    std::vector<std::string> revoked;
};

/// Counters of a backend's connections to a database server, for /metrics.
struct pool_stats {
    std::atomic<std::uint64_t> connects{0};        ///< connections made
    std::atomic<std::uint64_t> connect_errors{0};  ///< attempts that failed
    std::atomic<std::int64_t> open{0};             ///< connections open now
    std::atomic<std::int64_t> busy{0};             ///< connections running a request now
    std::atomic<std::uint64_t> notifications{0};   ///< notifications received
    std::atomic<std::uint64_t> catch_ups{0};       ///< reads of other nodes' events
};

/// What a node asks to claim: at most `limit` operations of the kinds it runs. A kind with a
/// `concurrency` of its own is in `limited` with it: that many run at most on all nodes
/// together.
struct claim_request {
    std::size_t limit = 0;
    std::vector<std::string> kinds;                         ///< kinds without a limit
    std::vector<std::pair<std::string, unsigned>> limited;  ///< kinds and their limits
};

/// What a claim came to: the operations this node runs now (their attempts started), and
/// when the first delayed pending operation is due (none: none is delayed).
struct claim_result {
    std::vector<core::operation> started;
    std::optional<core::millis> next_due;
};

/// The part of a backend that many nodes share: one queue that they claim from, the signals
/// they send each other, their heart-beats and the lease of the maintenance. Every node's
/// store may be asked; the answers hold for all of them.
class cluster {
  public:
    virtual ~cluster() = default;

    /// Called on a thread of the store when pending work may have appeared (on any node).
    std::function<void()> on_work;
    /// Called on a thread of the store with the id of an operation whose cancel some node
    /// accepted; the node that runs it stops its job.
    std::function<void(std::string)> on_cancel;

    /// This node's id (the fencing token of its attempts, with the attempt's number).
    virtual const std::string& node_id() const = 0;

    /// Claims up to `r.limit` pending operations due at `now`, highest priority first, then
    /// oldest, skipping those another node is claiming, and starts their attempts (lifecycle
    /// `started`) on this node.
    virtual boost::asio::awaitable<claim_result> claim(claim_request r, core::millis now) = 0;

    /// Of the operations running on this node, those whose cancel was requested (what
    /// `on_cancel` may have missed).
    virtual boost::asio::awaitable<std::vector<std::string>> cancels_requested() = 0;

    /// Tells the other nodes that this one is alive, and takes or renews the lease of the
    /// maintenance for `lease`; returns whether this node holds it now.
    virtual boost::asio::awaitable<bool> heartbeat(std::chrono::milliseconds lease) = 0;

    /// Under the lease only: the running operations of nodes whose last heart-beat is older
    /// than `timeout` are taken back (lifecycle `abandoned`: the attempt counts, a `pending`
    /// event) and those nodes are forgotten; returns how many operations. Without the lease:
    /// nothing, 0.
    virtual boost::asio::awaitable<int> rescue(std::chrono::milliseconds timeout,
                                               core::millis now) = 0;

    /// How many operations each tenant has pending, on every node.
    virtual boost::asio::awaitable<std::vector<std::pair<std::string, std::int64_t>>>
    pending_by_tenant() = 0;

    /// Adds the submissions this node admitted under a submit_rate quota since the last call
    /// (per tenant) to the shared counts; returns what every other node admitted since its
    /// start, summed per tenant.
    virtual boost::asio::awaitable<std::vector<std::pair<std::string, std::int64_t>>>
    share_submissions(std::vector<std::pair<std::string, std::int64_t>> admitted) = 0;

    /// Publishes every event that any node committed so far (`published_seq` covers them
    /// when this returns): a client may have seen, on another node, ids this one has not.
    virtual boost::asio::awaitable<void> catch_up() = 0;

    /// Whether the last attempt to reach the database succeeded.
    virtual bool reachable() const = 0;

    /// Counters of the connections.
    virtual const pool_stats& pool() const = 0;
};

/// The store's interface; one implementation per backend.
class store {
  public:
    virtual ~store() = default;

    /// Receives committed events (see the guarantees above). Set before open().
    std::function<void(std::vector<core::event>)> on_commit;

    /// Opens the database, brings the schema up to date and recovers in one transaction:
    /// operations whose cancel was accepted are canceled, attempts a crash left running are
    /// abandoned (lifecycle). Throws when the database cannot be used.
    virtual recovery open(core::millis now) = 0;

    /// Opens the database and brings the schema up to date, recovering nothing: for a process
    /// beside a running server (the keys command), whose operations it must leave alone.
    virtual void attach() = 0;

    /// Finishes queued work and closes the database; later calls fail.
    virtual void close() = 0;

    /// Stores a new operation with the events of its submission (lifecycle `submitted`),
    /// and the key when given. Atomic: a key's first use and its operation commit together.
    /// The key is looked up among those of `op.tenant`.
    virtual boost::asio::awaitable<submit_result> submit(core::operation op,
                                                         std::vector<core::event> events,
                                                         std::optional<idempotency_key> key) = 0;

    /// Starts the next attempt of each claimed operation that is still pending (lifecycle
    /// `started`), each as a write of its own; one result per claim, in order.
    virtual boost::asio::awaitable<std::vector<claimed>> start_attempts(std::vector<claim> claims,
                                                                        core::millis now) = 0;

    /// Writes each change as a write of its own, when its operation is still running in the
    /// store; one result per change, in order. `changes` and what they refer to must stay
    /// alive until this resumes.
    virtual boost::asio::awaitable<std::vector<recorded>> record(
        std::span<const change> changes) = 0;

    /// Cancels operation `id` of `tenant` if it is pending (lifecycle `canceled`).
    virtual boost::asio::awaitable<cancel_result> cancel_pending(tenant_id tenant,
                                                                 std::string id) = 0;

    /// Records that active operation `id` of `tenant` is to be canceled (lifecycle
    /// `cancel_requested`): durable, so that a server that stops before its job has stopped
    /// cancels it at start.
    virtual boost::asio::awaitable<void> request_cancel(tenant_id tenant, std::string id) = 0;

    /// Deletes a finished operation of `tenant` with its result, events and keys.
    virtual boost::asio::awaitable<delete_result> remove(tenant_id tenant, std::string id) = 0;

    /// Deletes up to `limit` operations that finished before `finished_before`, and the
    /// idempotency keys made before `keys_before`; returns how many operations went.
    virtual boost::asio::awaitable<int> purge(core::millis finished_before,
                                              core::millis keys_before, int limit) = 0;

    /// Loads one operation of `tenant`.
    virtual boost::asio::awaitable<std::optional<core::operation>> load(tenant_id tenant,
                                                                        std::string id) = 0;

    /// Loads one operation of `tenant` and, when it succeeded, its result.
    virtual boost::asio::awaitable<std::optional<operation_result>> load_result(tenant_id tenant,
                                                                                std::string id) = 0;

    /// The operations of `q.tenant`, newest first, filtered; up to `limit + 1` so that the
    /// caller can tell whether more follow.
    virtual boost::asio::awaitable<std::vector<core::operation>> list(list_query q) = 0;

    /// For each of `ids`: none when `tenant` has no such operation; else the id of its terminal
    /// event, 0 while it is active.
    virtual boost::asio::awaitable<std::vector<std::optional<std::int64_t>>> stream_ends(
        tenant_id tenant, std::vector<std::string> ids) = 0;

    /// The events of those of `ids` that are operations of `tenant`, with
    /// `after < seq <= upto`, oldest first, at most `limit`.
    virtual boost::asio::awaitable<std::vector<core::event>> replay(tenant_id tenant,
                                                                    std::vector<std::string> ids,
                                                                    std::int64_t after,
                                                                    std::int64_t upto,
                                                                    int limit) = 0;

    /// Stores a new API key with the hash of its secret; resumes once it is durable. Throws
    /// when its id or hash is taken.
    virtual boost::asio::awaitable<void> create_key(api_key_record key,
                                                    std::string secret_hash) = 0;

    /// The key whose secret has this hash, revoked or expired ones too (the caller checks).
    virtual boost::asio::awaitable<std::optional<api_key_record>> find_key(
        std::string secret_hash) = 0;

    /// The key with this id, revoked or expired ones too.
    virtual boost::asio::awaitable<std::optional<api_key_record>> find_key_by_id(
        std::string id) = 0;

    /// The keys not revoked (expired ones too) of `tenant`, or of every tenant when none,
    /// newest first.
    virtual boost::asio::awaitable<std::vector<api_key_record>> list_keys(
        std::optional<tenant_id> tenant) = 0;

    /// Revokes key `id` at `now`; false when there is no such key, it is revoked already, or
    /// it is not of `tenant` (when one is given). Durable before it resumes.
    virtual boost::asio::awaitable<bool> revoke_key(std::optional<tenant_id> tenant, std::string id,
                                                    core::millis now) = 0;

    /// The keys revoked (by any process on the database) after `version`, and the newest
    /// version; 0 asks for every revocation.
    virtual boost::asio::awaitable<key_changes> key_changes_since(std::int64_t version) = 0;

    /// The secret stored under `name`, storing `candidate` first when there is none: every
    /// process on the database gets the same one. Blocks until the write is durable: call it
    /// at start, after open() or attach(), never on an I/O thread.
    virtual std::string shared_secret(std::string_view name, std::string candidate) = 0;

    /// Whether a write round trip succeeds now (for /readyz).
    virtual boost::asio::awaitable<bool> writable() = 0;

    /// The newest event id that is durable and handed to `on_commit`.
    virtual std::int64_t published_seq() const = 0;

    /// Counters.
    virtual const store_stats& stats() const = 0;

    /// The part shared with other nodes; null for a backend of one node.
    virtual cluster* shared() { return nullptr; }
};

/// The embedded backend: an SQLite database file (WAL, group commit, one writer thread).
std::unique_ptr<store> make_sqlite_store(settings s);

/// The backend for many nodes: a PostgreSQL database (`s.path` is its URI), shared by every
/// node on it.
std::unique_ptr<store> make_postgres_store(settings s);

/// Whether `database` names a PostgreSQL database (`postgresql://` or `postgres://`) rather
/// than an SQLite file.
bool is_postgres_uri(std::string_view database);

}  // namespace buzzer::store
