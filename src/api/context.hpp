// What the handlers work with: the store, the scheduler, the hub, the kinds and the settings.
#pragma once

#include <atomic>
#include <buzzer/server.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/principal.hpp"
#include "http/router.hpp"
#include "http/server.hpp"
#include "jobs/kinds.hpp"
#include "jobs/scheduler.hpp"
#include "sse/hub.hpp"
#include "store/store.hpp"

namespace buzzer::api {

struct access;

/// The services a handler may call.
struct context {
    store::store& db;
    jobs::scheduler& scheduler;
    sse::hub& hub;
    const jobs::kind_registry& kinds;
    const options& settings;
    http::server_stats& http_stats;
    std::atomic<bool>& shutting_down;
    std::string base_url;         ///< public_url without a trailing slash, or empty
    std::string_view index_page;  ///< the demo page served at /
    access& gate;                 ///< credentials, quotas, CORS
    /// What buzzer_build_info says of this build: version, commit, libraries.
    std::vector<std::pair<std::string, std::string>> build = {};
};

/// A handler function of the API.
using handler_function = boost::asio::awaitable<http::response> (*)(context&, http::request&);

/// Checks the credential of `req` for `needed` (access.cpp), then runs `fn`.
boost::asio::awaitable<http::response> guarded(context& ctx, http::request& req, core::role needed,
                                               handler_function fn);

/// A router handler that needs a credential with `needed` and then calls `fn(ctx, request)`.
inline http::handler bind_handler(context& ctx, core::role needed, handler_function fn) {
    return [&ctx, needed, fn](http::request& req) { return guarded(ctx, req, needed, fn); };
}

/// A router handler that needs no credential.
inline http::handler bind_public(context& ctx, handler_function fn) {
    return [&ctx, fn](http::request& req) { return fn(ctx, req); };
}

/// Registers every route of the API.
void add_routes(http::router& r, context& ctx);

/// Operation routes (operations.cpp).
void add_operation_routes(http::router& r, context& ctx);

/// Event stream routes (events.cpp).
void add_event_routes(http::router& r, context& ctx);

/// Service routes: demo page, kinds, health, metrics (service.cpp).
void add_service_routes(http::router& r, context& ctx);

}  // namespace buzzer::api
