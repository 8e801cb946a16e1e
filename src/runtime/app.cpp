// Wiring: store, hub, scheduler, HTTP front and signals make one server.
#include <sys/resource.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/json.hpp>
#include <buzzer/server.hpp>
#include <condition_variable>
#include <csignal>
#include <fstream>
#include <functional>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "api/access.hpp"
#include "api/context.hpp"
#include "auth/api_key.hpp"
#include "auth/authenticator.hpp"
#include "auth/settings.hpp"
#include "core/log.hpp"
#include "core/thread.hpp"
#include "http/server.hpp"
#include "jobs/executors.hpp"
#include "jobs/kinds.hpp"
#include "jobs/scheduler.hpp"
#include "runtime/build_info.hpp"
#include "runtime/config.hpp"
#include "runtime/database.hpp"
#include "runtime/embedded.hpp"
#include "runtime/service_manager.hpp"
#include "sse/hub.hpp"
#include "store/store.hpp"

namespace buzzer {
namespace asio = boost::asio;
namespace json = boost::json;
constexpr auto tuple_awaitable = asio::as_tuple(asio::use_awaitable);

namespace {

// How often finished operations past their retention are purged: a quarter of the retention,
// at least every second and at most every minute (so a short retention is kept to closely).
std::chrono::steady_clock::duration purge_interval(double retention_s) {
    const double s = std::clamp(retention_s / 4, 1.0, 60.0);
    return std::chrono::duration_cast<std::chrono::steady_clock::duration>(
        std::chrono::duration<double>(s));
}
// Idempotency keys are honoured at least this long.
constexpr core::millis key_lifetime_ms = 24LL * 3600 * 1000;

// Whether every event loop runs a handler posted to it within `within` (the watchdog's test).
bool every_loop_answers(const std::vector<asio::io_context*>& loops,
                        std::chrono::milliseconds within) {
    struct answers {
        std::mutex m;
        std::condition_variable cv;
        std::size_t count = 0;
    };
    // Shared with the handlers: one that runs after the wait gave up still has it.
    auto a = std::make_shared<answers>();
    for (auto* loop : loops)
        asio::post(*loop, [a] {
            std::lock_guard lock(a->m);
            ++a->count;
            a->cv.notify_one();
        });
    std::unique_lock lock(a->m);
    return a->cv.wait_for(lock, within, [&] { return a->count == loops.size(); });
}

// The database as logged: a URI without its password.
std::string database_name(const std::string& database) {
    if (!store::is_postgres_uri(database)) return database;
    const auto scheme_end = database.find("://") + 3;
    const auto at = database.find('@', scheme_end);
    if (at == std::string::npos) return database;
    const auto colon = database.find(':', scheme_end);
    if (colon == std::string::npos || colon > at) return database;
    return database.substr(0, colon) + ":***" + database.substr(at);
}

void raise_file_limit() {
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

}  // namespace

struct server::impl {
    explicit impl(options o) : opts(std::move(o)) {
        while (!opts.public_url.empty() && opts.public_url.back() == '/')
            opts.public_url.pop_back();
    }

    options opts;
    jobs::kind_registry kinds;
    std::unique_ptr<asio::io_context> io;
    std::atomic<bool> shutting_down{false};
    std::atomic<bool> running{false};
    std::mutex stop_mutex;
    bool stop_requested = false;
    std::function<void()> begin_stop;

    // What SIGHUP reloads, one step after the other: a step that fails logs why and leaves
    // what it reloads as it was; the other steps go on. A step reads a few small files on the
    // first I/O thread: a rare operator's action, bounded by the size limits of those files.
    void reload(http::server& front, auth::authenticator& credentials, api::access& gate) {
        bool ok = true;
        if (!opts.tls_cert.empty()) {
            try {
                front.use_tls(opts.tls_cert, opts.tls_key);
            } catch (const std::exception& e) {
                ok = false;
                core::log(core::level::error,
                          std::string("reload: TLS certificate not reloaded, the previous one "
                                      "stays: ") +
                              e.what());
            }
        }
        if (!opts.config_file.empty()) {
            try {
                std::ifstream in(opts.config_file, std::ios::binary);
                if (!in) throw std::runtime_error(opts.config_file + ": cannot read the file");
                std::stringstream text;
                text << in.rdbuf();
                options fresh;
                std::vector<runtime::kind_config> kinds;
                runtime::apply_config(fresh, kinds, text.str(), opts.config_file);
                // Without `auth` in the file, what the command line said stays.
                const auto& auth_text = fresh.auth.empty() ? opts.auth : fresh.auth;
                auto next =
                    auth::parse_settings(auth_text, fresh.tenants, fresh.cors, opts.config_file);
                if (next.enabled != credentials.enabled())
                    throw std::runtime_error("turning credentials on or off needs a restart");
                credentials.reload(next);
                gate.rates.clear();
            } catch (const std::exception& e) {
                ok = false;
                core::log(core::level::error,
                          std::string("reload: auth, tenants and cors not reloaded, the previous "
                                      "ones stay: ") +
                              e.what());
            }
        }
        if (ok) core::log(core::level::info, "reloaded");
    }

    // Waits `d` on `timer` unless the shutdown has begun; false once it has. The shutdown
    // cancels the maintenance timers on their strand, which is the loops' strand too: a loop
    // that pauses only through here never starts a wait after that cancel.
    asio::awaitable<bool> pause(asio::steady_timer& timer, asio::steady_timer::duration d) {
        if (shutting_down) co_return false;
        timer.expires_after(d);
        co_await timer.async_wait(tuple_awaitable);
        co_return !shutting_down;
    }

    asio::awaitable<void> purge_loop(store::store& db, asio::steady_timer& timer) {
        while (!shutting_down) {
            try {
                auto now = core::now_ms();
                const auto retention = static_cast<core::millis>(opts.retention_s * 1000);
                int purged = co_await db.purge(now - retention,
                                               now - std::max(key_lifetime_ms, retention), 1000);
                // A large backlog is purged in slices so that no commit grows too big.
                if (purged == 1000) continue;
            } catch (const std::exception& e) {
                core::log(core::level::error, std::string("purge: ") + e.what());
            }
            if (!co_await pause(timer, purge_interval(opts.retention_s))) break;
        }
    }

    // Many nodes: every half second, what this node admitted under submit_rate quotas goes to
    // the database, and what the other nodes admitted since the last look comes off this
    // node's buckets, so that a tenant's rate holds for all nodes together.
    asio::awaitable<void> share_rates_loop(store::cluster& nodes, auth::submit_rates& rates,
                                           asio::steady_timer& timer) {
        std::unordered_map<std::string, std::int64_t> seen;  // the others' counts, debited
        bool first = true;
        while (!shutting_down) {
            auto admitted = rates.take_admitted();
            try {
                auto others = co_await nodes.share_submissions(admitted);
                const auto now = std::chrono::steady_clock::now();
                for (const auto& [tenant, total] : others) {
                    auto [it, fresh] = seen.try_emplace(tenant, 0);
                    // What the others admitted before this node's first look is history; a
                    // total that shrank lost a node that was forgotten.
                    if (!first && total > it->second)
                        rates.debit(tenant, static_cast<double>(total - it->second), now);
                    it->second = total;
                }
                first = false;
            } catch (const std::exception& e) {
                rates.restore_admitted(admitted);
                core::log(core::level::warn, std::string("sharing submission rates: ") + e.what());
            }
            if (!co_await pause(timer, std::chrono::milliseconds(500))) break;
        }
    }
};

server::server(options opts) : impl_(std::make_unique<impl>(std::move(opts))) {}

server::~server() = default;

void server::kind(const std::string& name, job_function fn, kind_options defaults,
                  input_check check, std::string executor) {
    impl_->kinds.add({name, std::move(executor), defaults, std::move(fn), std::move(check)});
}

void server::stop() {
    std::lock_guard lock(impl_->stop_mutex);
    impl_->stop_requested = true;
    if (impl_->begin_stop) impl_->begin_stop();
}

void server::run() {
    auto& s = *impl_;
    core::level least = core::level::info;
    if (!core::parse_level(s.opts.log_level, least))
        throw std::invalid_argument("log_level: must be debug, info, warn or error (got \"" +
                                    s.opts.log_level + "\")");
    core::configure_log(s.opts.log_json, least);
    raise_file_limit();
    std::signal(SIGPIPE, SIG_IGN);
    // Past a file size limit (ulimit -f) a write fails with EFBIG, which the store reports
    // like a full disk, instead of the signal killing the server.
    std::signal(SIGXFSZ, SIG_IGN);
    if (s.opts.builtin_kinds) {
        jobs::kind_registry builtins;
        jobs::add_builtin_kinds(builtins);
        for (const auto* k : builtins.all())
            if (!s.kinds.find(k->name)) s.kinds.add(*k);
    }
    unsigned threads =
        s.opts.threads ? s.opts.threads : std::max(1u, std::thread::hardware_concurrency());
    // One io_context per I/O thread, each run by that thread alone (no locking inside it, no
    // strand per connection). The first runs the hub, the scheduler, the jobs and the
    // acceptor; connections go to the others (to the first too when it is the only one), so
    // that requests never wait behind the work of the rest.
    s.io = std::make_unique<asio::io_context>(1);
    auto& io = *s.io;
    auto work = asio::make_work_guard(io);
    std::vector<std::unique_ptr<asio::io_context>> extra;
    std::vector<asio::executor_work_guard<asio::io_context::executor_type>> extra_work;
    std::vector<asio::io_context*> contexts{&io};
    for (unsigned i = 1; i < threads; ++i) {
        extra.push_back(std::make_unique<asio::io_context>(1));
        extra_work.push_back(asio::make_work_guard(*extra.back()));
        contexts.push_back(extra.back().get());
    }
    // The connections' threads start before anything else, so that one that cannot start
    // (too many, or no memory for a stack) leaves nothing else to undo. If anything after
    // this throws, they are stopped and joined before the scope unwinds: a joinable
    // std::thread's destructor would end the process (`terminate called without an active
    // exception`).
    std::vector<std::thread> pool;
    struct join_on_exit {
        std::vector<std::thread>& pool;
        std::vector<std::unique_ptr<asio::io_context>>& contexts;
        ~join_on_exit() {
            if (std::none_of(pool.begin(), pool.end(), [](auto& t) { return t.joinable(); }))
                return;
            for (auto& c : contexts) c->stop();
            for (auto& t : pool)
                if (t.joinable()) t.join();
        }
    } joiner{pool, extra};
    try {
        for (auto& c : extra)
            pool.emplace_back([ctx = c.get()] {
                core::name_this_thread("buzzer-io");
                ctx->run();
            });
    } catch (const std::system_error& e) {
        throw std::runtime_error("cannot start " + std::to_string(threads) +
                                 " I/O threads: " + e.what());
    }

    sse::hub hub(io.get_executor(),
                 std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                     std::chrono::duration<double>(s.opts.sse_heartbeat_s)),
                 s.opts.public_url);

    store::settings ss;
    ss.path = s.opts.database;
    ss.node_id = s.opts.node_id;
    ss.synchronous_full = s.opts.synchronous_full;
    auto database = runtime::make_store(std::move(ss));
    auto& db = *database;
    db.on_commit = [&hub](std::vector<core::event> events) { hub.publish(std::move(events)); };
    // Operations whose cancel was answered are canceled, attempts a crash left running are
    // abandoned; what is pending is queued.
    store::recovery recovered;
    try {
        recovered = db.open(core::now_ms());
    } catch (const store::schema_error& e) {
        throw schema_too_new(e.what());
    }
    // Commands those attempts started that outlived the server: not a second copy alongside
    // the attempt that runs again.
    if (int n = jobs::end_orphans(recovered.abandoned))
        core::log(core::level::warn, "killed " + std::to_string(n) +
                                         " leftover processes of attempts of a stopped server");

    // Access control: the settings were checked at start (config), so a failure here is a
    // file named in them that does not load.
    auth::settings access_settings;
    try {
        access_settings =
            auth::parse_settings(s.opts.auth, s.opts.tenants, s.opts.cors,
                                 s.opts.config_file.empty() ? "configuration" : s.opts.config_file);
    } catch (const std::invalid_argument& e) {
        throw std::runtime_error(e.what());
    }
    auth::authenticator credentials(db, access_settings,
                                    db.shared_secret("session", auth::random_secret(32)));
    api::access gate(credentials);
    if (access_settings.enabled) {
        // Keys revoked before this start are refused from the first request on.
        auto read = asio::co_spawn(io, credentials.refresh(), asio::use_future);
        while (read.wait_for(std::chrono::seconds(0)) != std::future_status::ready) io.run_one();
        read.get();
    }

    jobs::scheduler_settings scheduling;
    scheduling.max_running = s.opts.max_running;
    scheduling.node_timeout = std::chrono::milliseconds(
        static_cast<std::int64_t>(std::max(1.0, s.opts.node_timeout_s) * 1000));
    jobs::scheduler sched(io, db, s.kinds, scheduling);
    sched.load(recovered.pending);

    http::router routes;
    http::server_settings hs;
    hs.header_limit = s.opts.header_limit;
    hs.body_limit = s.opts.body_limit;
    hs.header_timeout =
        std::chrono::milliseconds(static_cast<long>(s.opts.header_timeout_s * 1000));
    hs.idle_timeout = std::chrono::milliseconds(static_cast<long>(s.opts.idle_timeout_s * 1000));
    hs.write_timeout = std::chrono::milliseconds(static_cast<long>(s.opts.write_timeout_s * 1000));
    hs.max_connections = s.opts.max_connections;
    std::vector<asio::io_context*> connection_contexts(contexts.begin() + (contexts.size() > 1),
                                                       contexts.end());
    http::server front(io, connection_contexts, routes, hs);
    std::string_view index_page;
    for (const auto& f : embedded::assets())
        if (f.name == "index.html") index_page = f.content;
    api::context ctx{db,
                     sched,
                     hub,
                     s.kinds,
                     s.opts,
                     front.stats(),
                     s.shutting_down,
                     s.opts.public_url,
                     index_page,
                     gate,
                     runtime::build_labels()};
    api::add_routes(routes, ctx);

    if (s.opts.tls_cert.empty() != s.opts.tls_key.empty())
        throw std::runtime_error("tls_cert and tls_key go together: give both or neither");
    if (!s.opts.tls_cert.empty()) front.use_tls(s.opts.tls_cert, s.opts.tls_key);
    std::string bound = front.listen(s.opts.listen);
    front.start();
    sched.start();
    auto maintenance = asio::make_strand(io);
    asio::steady_timer purge_timer(maintenance);
    asio::co_spawn(maintenance, s.purge_loop(db, purge_timer), asio::detached);
    asio::steady_timer rates_timer(maintenance);
    if (access_settings.enabled && db.shared())
        asio::co_spawn(maintenance, s.share_rates_loop(*db.shared(), gate.rates, rates_timer),
                       asio::detached);
    if (access_settings.enabled)
        asio::co_spawn(maintenance, credentials.watch(std::chrono::milliseconds(500)),
                       core::log_failures("following key revocations"));
    asio::signal_set signals(io);
    asio::signal_set reload_signals(io);
    std::optional<runtime::service_manager> manager;
    if (s.opts.notify_service_manager) manager.emplace();
    auto tell_manager = [&](std::string_view state) {
        if (manager) manager->notify(state);
    };

    // Graceful shutdown: refuse new work, end streams, hand jobs back, drain connections.
    // When everything has ended, io.run() returns by itself.
    std::mutex exit_mutex;
    std::condition_variable exit_cv;
    bool exited = false;
    std::atomic<bool> forced{false};
    std::thread watchdog;
    auto shutdown = [&]() -> asio::awaitable<void> {
        // Everything within the grace: jobs stopping, then requests still being read or
        // answered (for 5 s at most: a client that stalls mid-request is cut off).
        const auto deadline = std::chrono::steady_clock::now() +
                              std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                  std::chrono::duration<double>(s.opts.shutdown_grace_s));
        s.shutting_down = true;
        front.stop();
        hub.shutdown();
        co_await sched.shutdown(deadline);
        asio::steady_timer t(co_await asio::this_coro::executor);
        const auto drained_by =
            std::min(deadline, std::chrono::steady_clock::now() + std::chrono::seconds(5));
        while (front.connections() > 0 && std::chrono::steady_clock::now() < drained_by) {
            t.expires_after(std::chrono::milliseconds(20));
            co_await t.async_wait(tuple_awaitable);
        }
        front.close_all();
        asio::post(maintenance, [&] {
            purge_timer.cancel();
            rates_timer.cancel();
        });
        credentials.stop();
        boost::system::error_code ignored;
        signals.cancel(ignored);
        reload_signals.cancel(ignored);
        work.reset();
        for (auto& w : extra_work) w.reset();
        // Whatever still holds an io_context after this (a job that ignores cancellation)
        // is abandoned.
        watchdog = std::thread([&] {
            std::unique_lock lock(exit_mutex);
            if (!exit_cv.wait_for(lock, std::chrono::seconds(5), [&] { return exited; })) {
                forced = true;
                for (auto* c : contexts) c->stop();
            }
        });
    };
    std::atomic<bool> stop_started{false};
    auto start_shutdown = [&] {
        if (stop_started.exchange(true)) return;
        tell_manager("STOPPING=1");
        asio::co_spawn(io, shutdown(), [](std::exception_ptr e) {
            if (e) core::log(core::level::error, "shutdown failed");
        });
    };
    {
        std::lock_guard lock(s.stop_mutex);
        s.begin_stop = [&io, &start_shutdown] { asio::post(io, start_shutdown); };
        if (s.stop_requested) s.begin_stop();
    }
    if (s.opts.handle_signals) {
        signals.add(SIGINT);
        signals.add(SIGTERM);
        signals.async_wait([&](boost::system::error_code ec, int) {
            if (!ec) start_shutdown();
        });
    }
    // SIGHUP reloads, as often as it comes, until the shutdown cancels the wait.
    std::function<void()> await_reload = [&] {
        reload_signals.async_wait([&](boost::system::error_code ec, int) {
            if (ec || s.shutting_down) return;
            // steady_clock is CLOCK_MONOTONIC, the clock systemd wants here.
            const auto now = std::chrono::duration_cast<std::chrono::microseconds>(
                std::chrono::steady_clock::now().time_since_epoch());
            tell_manager("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(now.count()));
            s.reload(front, credentials, gate);
            tell_manager("READY=1");
            await_reload();
        });
    };
    if (s.opts.handle_signals) {
        reload_signals.add(SIGHUP);
        await_reload();
    }

    if (on_listening) on_listening(bound);
    core::log(
        core::level::info,
        std::string("buzzer listening on ") + (front.secure() ? "https://" : "http://") + bound +
            ", database " + database_name(s.opts.database) +
            (access_settings.enabled ? ", credentials required" : ", open mode (no credentials)"));
    if (!access_settings.enabled && !runtime::is_loopback(bound))
        core::log(core::level::warn, "serving without credentials on " + bound +
                                         ": anyone who can reach it may read, submit and delete "
                                         "every operation");

    tell_manager("READY=1\nSTATUS=listening on " + bound);
    if (manager)
        manager->start_watchdog([&contexts](std::chrono::milliseconds within) {
            return every_loop_answers(contexts, within);
        });

    io.run();
    if (manager) manager->stop_watchdog();
    for (auto& t : pool) t.join();
    {
        std::lock_guard lock(exit_mutex);
        exited = true;
    }
    exit_cv.notify_all();
    if (watchdog.joinable()) watchdog.join();
    {
        std::lock_guard lock(s.stop_mutex);
        s.begin_stop = nullptr;
    }
    db.close();
    if (forced) {
        // Handlers left in the queue refer to the objects of this scope: never run their
        // destructors after those objects are gone.
        (void)s.io.release();
        for (auto& c : extra) (void)c.release();
        core::log(core::level::warn, "buzzer stopped with work still running");
    }
    core::log(core::level::info, "buzzer stopped");
}

}  // namespace buzzer
