// Service endpoints: the demo page, /kinds, /healthz, /readyz, /metrics.
#include <boost/json.hpp>
#include <span>

#include "api/access.hpp"
#include "api/common.hpp"

namespace buzzer::api {
namespace asio = boost::asio;
namespace json = boost::json;

namespace {

asio::awaitable<http::response> index_page(context& ctx, http::request&) {
    http::response r;
    r.body = std::string(ctx.index_page);
    r.set("Content-Type", "text/html; charset=utf-8");
    r.set("Cache-Control", "no-cache");
    co_return r;
}

asio::awaitable<http::response> kinds(context& ctx, http::request&) {
    json::array list;
    for (const auto* k : ctx.kinds.all()) {
        json::object o;
        o["name"] = k->name;
        o["executor"] = k->executor;
        o["timeout_s"] = core::json_number(k->defaults.timeout_s);
        o["max_attempts"] = k->defaults.max_attempts;
        o["concurrency"] = k->defaults.concurrency;
        o["priority"] = k->defaults.priority;
        list.push_back(std::move(o));
    }
    json::object body;
    body["kinds"] = std::move(list);
    co_return json_response(200, core::to_json(body));
}

asio::awaitable<http::response> healthz(context&, http::request&) {
    co_return json_response(200, R"({"status":"ok"})");
}

asio::awaitable<http::response> readyz(context& ctx, http::request&) {
    if (ctx.shutting_down)
        throw http::http_error{503, "shutting-down", "the server is shutting down"};
    bool writable = co_await ctx.db.writable();
    if (!writable)
        throw http::http_error{503, "database-unavailable", "the database is not writable"};
    co_return json_response(200, R"({"status":"ok"})");
}

void metric(std::string& out, std::string_view name, std::string_view type, std::string_view help,
            double value, std::string_view labels = {}) {
    if (!type.empty()) {
        out += "# HELP ";
        out += name;
        out += ' ';
        out += help;
        out += "\n# TYPE ";
        out += name;
        out += ' ';
        out += type;
        out += '\n';
    }
    out += name;
    out += labels;
    out += ' ';
    out += core::number_text(value);
    out += '\n';
}

// Labels in the exposition format, `{name="value",...}`: values are any text, escaped.
std::string labels_text(std::span<const std::pair<std::string, std::string>> labels) {
    std::string out = "{";
    for (const auto& [name, value] : labels) {
        if (out.size() > 1) out += ',';
        out += name;
        out += "=\"";
        for (char c : value) {
            if (c == '\n') {
                out += "\\n";
                continue;
            }
            if (c == '\\' || c == '"') out += '\\';
            out += c;
        }
        out += '"';
    }
    return out + "}";
}

asio::awaitable<http::response> metrics(context& ctx, http::request& req) {
    // An admin of any tenant, or the scraper's own token.
    auto& credentials = ctx.gate.credentials;
    if (credentials.enabled() && !(req.has_header("authorization") &&
                                   credentials.is_metrics_token(req.header("authorization"))))
        co_await authorize(ctx, req, core::role::admin);
    std::string out;
    const auto& h = ctx.http_stats;
    const auto& s = ctx.scheduler.stats();
    const auto& d = ctx.db.stats();
    metric(out, "buzzer_http_requests_total", "counter", "HTTP requests handled",
           static_cast<double>(h.requests.load()));
    metric(out, "buzzer_http_responses_total", "counter", "HTTP responses by status class",
           static_cast<double>(h.responses_2xx.load()), "{class=\"2xx\"}");
    metric(out, "buzzer_http_responses_total", "", "", static_cast<double>(h.responses_3xx.load()),
           "{class=\"3xx\"}");
    metric(out, "buzzer_http_responses_total", "", "", static_cast<double>(h.responses_4xx.load()),
           "{class=\"4xx\"}");
    metric(out, "buzzer_http_responses_total", "", "", static_cast<double>(h.responses_5xx.load()),
           "{class=\"5xx\"}");
    metric(out, "buzzer_http_connections", "gauge", "Open HTTP connections",
           static_cast<double>(h.connections.load()));
    metric(out, "buzzer_http_connections_refused_total", "counter",
           "Connections closed as soon as accepted because max_connections were open",
           static_cast<double>(h.connections_refused.load()));
    metric(out, "buzzer_sse_streams", "gauge", "Open event streams",
           static_cast<double>(h.streams.load()));
    metric(out, "buzzer_sse_subscribers", "gauge", "Subscribers of the event hub",
           static_cast<double>(ctx.hub.subscribers()));
    metric(out, "buzzer_operations_pending", "gauge", "Operations waiting to run",
           static_cast<double>(s.pending.load()));
    metric(out, "buzzer_operations_running", "gauge", "Operations running",
           static_cast<double>(s.running.load()));
    metric(out, "buzzer_attempts_total", "counter", "Attempts started",
           static_cast<double>(s.attempts.load()));
    metric(out, "buzzer_operations_finished_total", "counter", "Operations finished by status",
           static_cast<double>(s.succeeded.load()), "{status=\"succeeded\"}");
    metric(out, "buzzer_operations_finished_total", "", "", static_cast<double>(s.failed.load()),
           "{status=\"failed\"}");
    metric(out, "buzzer_operations_finished_total", "", "", static_cast<double>(s.canceled.load()),
           "{status=\"canceled\"}");
    metric(out, "buzzer_attempts_retried_total", "counter", "Failed attempts that will be retried",
           static_cast<double>(s.retried.load()));
    metric(out, "buzzer_store_commits_total", "counter", "Group commits (transactions)",
           static_cast<double>(d.batches.load()));
    metric(out, "buzzer_store_syncs_total", "counter",
           "Durable commits: fdatasyncs of SQLite's WAL, each covering every commit made before "
           "it, or COMMITs on PostgreSQL",
           static_cast<double>(d.syncs.load()));
    metric(out, "buzzer_store_writes_total", "counter", "Writes committed",
           static_cast<double>(d.writes.load()));
    metric(out, "buzzer_store_reads_total", "counter", "Reads served",
           static_cast<double>(d.reads.load()));
    d.write_latency.render(out, "buzzer_store_write_seconds",
                           "Writes: queued to durable (queue wait, group commit, fsync)");
    d.sync_latency.render(
        out, "buzzer_store_sync_seconds",
        "Durable commits: an fdatasync of SQLite's WAL or a COMMIT on PostgreSQL");
    ctx.hub.delivery.render(out, "buzzer_sse_delivery_seconds",
                            "Live events: commit to written to the subscriber's socket (the "
                            "oldest event of each write)");
    bool first = true;
    for (auto reason : auth::all_refusals) {
        metric(out, "buzzer_auth_failures_total", first ? "counter" : "",
               "Requests refused for their credential (401, and 403 for a role), by reason",
               static_cast<double>(credentials.refusals(reason)),
               "{reason=\"" + std::string(auth::to_string(reason)) + "\"}");
        first = false;
    }
    metric(out, "buzzer_auth_failure_limit_total", "counter",
           "Requests refused (429) because their address failed to authenticate too often",
           static_cast<double>(ctx.gate.failure_rejections.load()));
    if (!ctx.build.empty())
        metric(out, "buzzer_build_info", "gauge",
               "This build: version, commit, options and the libraries it runs with", 1,
               labels_text(ctx.build));
    if (auto* cluster = ctx.db.shared()) {
        const std::pair<std::string, std::string> node[] = {{"node_id", cluster->node_id()}};
        metric(out, "buzzer_node_info", "gauge", "This node among those on the database", 1,
               labels_text(node));
        const auto& p = cluster->pool();
        metric(out, "buzzer_db_connections", "gauge", "Connections to the database open now",
               static_cast<double>(p.open.load()));
        metric(out, "buzzer_db_connections_busy", "gauge",
               "Connections to the database running a request now",
               static_cast<double>(p.busy.load()));
        metric(out, "buzzer_db_connects_total", "counter", "Connections to the database made",
               static_cast<double>(p.connects.load()));
        metric(out, "buzzer_db_connect_errors_total", "counter",
               "Attempts to connect to the database that failed",
               static_cast<double>(p.connect_errors.load()));
        metric(out, "buzzer_db_notifications_total", "counter",
               "Notifications received from the database (other nodes' commits and signals)",
               static_cast<double>(p.notifications.load()));
        metric(out, "buzzer_db_catch_ups_total", "counter",
               "Reads of events that other nodes committed",
               static_cast<double>(p.catch_ups.load()));
        metric(out, "buzzer_db_reachable", "gauge",
               "Whether the last attempt to reach the database succeeded",
               cluster->reachable() ? 1 : 0);
    }
    metric(out, "buzzer_quota_rejections_total", "counter",
           "Submissions refused (429) by their tenant's quota",
           static_cast<double>(ctx.gate.quota_rejections.load()));
    http::response r;
    r.set("Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    r.body = std::move(out);
    co_return r;
}

}  // namespace

void add_service_routes(http::router& r, context& ctx) {
    r.add("GET", "/", bind_public(ctx, index_page));
    r.add("GET", "/kinds", bind_handler(ctx, core::role::read, kinds));
    r.add("GET", "/healthz", bind_public(ctx, healthz));
    r.add("GET", "/readyz", bind_public(ctx, readyz));
    r.add("GET", "/metrics", bind_public(ctx, metrics));
}

namespace {

// A write the database cannot take now (disk full, I/O error, read-only file, locked) is a
// 503 to retry, as /readyz says meanwhile; other failures stay 500s.
std::optional<http::http_error> store_problem(const std::exception& e) {
    const auto* db = dynamic_cast<const store::database_error*>(&e);
    if (!db || !db->unavailable()) return std::nullopt;
    return http::http_error{
        503,
        "database-unavailable",
        std::string("the database cannot take writes now (") + db->what() + "); retry later",
        {},
        {{"Retry-After", "5"}}};
}

}  // namespace

void add_routes(http::router& r, context& ctx) {
    r.on_exception(store_problem);
    add_access_hooks(r, ctx);
    add_session_routes(r, ctx);
    add_key_routes(r, ctx);
    add_operation_routes(r, ctx);
    add_event_routes(r, ctx);
    add_service_routes(r, ctx);
}

}  // namespace buzzer::api
