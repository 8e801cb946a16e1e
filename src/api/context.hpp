// What the handlers work with: the store, the scheduler, the hub, the kinds and the settings.
#pragma once

#include <atomic>
#include <buzzer/server.hpp>
#include <string>
#include <string_view>

#include "http/router.hpp"
#include "http/server.hpp"
#include "jobs/kinds.hpp"
#include "jobs/scheduler.hpp"
#include "sse/hub.hpp"
#include "store/store.hpp"

namespace buzzer::api {

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
};

/// A router handler that calls `fn(ctx, request)`; `fn` is a plain function.
template <class F>
http::handler bind_handler(context& ctx, F* fn) {
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
