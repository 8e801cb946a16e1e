// /operations: submit, status monitor, result, cancel, delete, list.
#include <algorithm>
#include <boost/json.hpp>
#include <cmath>

#include "api/access.hpp"
#include "api/common.hpp"
#include "api/events.hpp"
#include "core/json_text.hpp"
#include "core/lifecycle.hpp"
#include "core/ulid.hpp"
#include "store/store.hpp"

namespace buzzer::api {
namespace asio = boost::asio;
namespace json = boost::json;
using http::http_error;

namespace {

bool is_json_media_type(std::string_view ct) {
    return http::iequals(http::trim_ows(ct.substr(0, ct.find(';'))), "application/json");
}

std::optional<long long> integer_field(const json::object& o, std::string_view name) {
    auto it = o.find(name);
    if (it == o.end() || it->value().is_null()) return std::nullopt;
    const auto& v = it->value();
    if (v.is_int64()) return v.get_int64();
    if (v.is_uint64())
        return static_cast<long long>(std::min<std::uint64_t>(v.get_uint64(), 1ULL << 62));
    if (v.is_double() && std::floor(v.get_double()) == v.get_double() &&
        std::abs(v.get_double()) < 1e18)
        return static_cast<long long>(v.get_double());
    if (v.is_number())  // the right type, not an acceptable value
        throw http_error{422, "invalid-request", std::string(name) + " must be an integer"};
    throw http_error{400, "invalid-request", std::string(name) + " must be an integer"};
}

http_error unprocessable(std::string type, std::string detail) {
    return http_error{422, std::move(type), std::move(detail)};
}

// A parsed and validated submission.
struct submission {
    core::operation op;
    std::string canonical;  ///< canonical body, for idempotency
};

submission parse_submission(const context& ctx, const http::request& req) {
    if (!is_json_media_type(req.header("content-type")))
        throw http_error{415, "unsupported-media-type", "the body must be application/json"};
    boost::system::error_code ec;
    // The parsed body lives only in this call: its nodes come from a buffer on the stack (and
    // past it from blocks freed all at once), not one allocation each.
    unsigned char scratch[4096];
    json::monotonic_resource arena(scratch, sizeof scratch);
    json::value body = json::parse(req.body, ec, &arena, core::json_options());
    if (ec == json::error::too_deep)
        throw unprocessable("invalid-request", "the body nests arrays and objects deeper than " +
                                                   std::to_string(core::max_json_depth) +
                                                   " levels");
    if (ec) throw http_error{400, "malformed-json", "the body is not valid JSON: " + ec.message()};
    if (!body.is_object())
        throw http_error{400, "invalid-request", "the body must be a JSON object"};
    const auto& o = body.get_object();

    auto kind_it = o.find("kind");
    if (kind_it == o.end() || kind_it->value().is_null())
        throw http_error{400, "invalid-request", "kind is required"};
    if (!kind_it->value().is_string())
        throw http_error{400, "invalid-request", "kind must be a string"};
    std::string kind(kind_it->value().get_string());

    auto priority = integer_field(o, "priority");
    auto max_attempts = integer_field(o, "max_attempts");
    std::optional<double> timeout;
    if (auto it = o.find("timeout_s"); it != o.end() && !it->value().is_null()) {
        if (!it->value().is_number())
            throw http_error{400, "invalid-request", "timeout_s must be a number"};
        timeout = it->value().to_number<double>();
    }
    const json::value* input = nullptr;
    if (auto it = o.find("input"); it != o.end()) input = &it->value();

    const jobs::kind_def* k = ctx.kinds.find(kind);
    if (!k) throw unprocessable("unknown-kind", "this server has no kind named " + kind);
    if (priority && (*priority < -100 || *priority > 100))
        throw unprocessable("invalid-request", "priority must be between -100 and 100");
    if (max_attempts && (*max_attempts < 1 || *max_attempts > 100))
        throw unprocessable("invalid-request", "max_attempts must be between 1 and 100");
    if (timeout && !(*timeout > 0 && *timeout <= 86400))
        throw unprocessable("invalid-request",
                            "timeout_s must be greater than 0 and at most 86400");
    static const json::value null_input;
    if (k->check) {
        try {
            k->check(input ? *input : null_input);
        } catch (const invalid_input& e) {
            throw unprocessable("invalid-input", e.what());
        }
    }

    submission s;
    auto now = core::now_ms();
    s.op.id = core::make_ulid(now);
    s.op.kind = kind;
    s.op.state = core::status::pending;
    s.op.input = input ? std::string(core::member_text(req.body, "input").value()) : "null";
    s.op.priority = priority ? static_cast<int>(*priority) : k->defaults.priority;
    s.op.max_attempts = max_attempts ? static_cast<int>(*max_attempts) : k->defaults.max_attempts;
    s.op.timeout_s = timeout ? *timeout : k->defaults.timeout_s;
    s.op.created_at = now;
    s.op.tenant = caller(req).tenant;
    // Only an idempotent request compares bodies.
    if (req.has_header("idempotency-key")) s.canonical = core::canonical_json(body);
    return s;
}

http::response accepted(const context& ctx, status_view v) {
    http::response r = json_response(202, std::move(v.text));
    auto url = status_url(ctx, v.id);
    r.set("Location", url);
    r.set("Operation-Location", url);
    r.set("Retry-After", retry_after_for(v.state, v.run_after));
    return r;
}

asio::awaitable<http::response> submit(context& ctx, http::request& req) {
    // Errors too are answers that vary with the request's Prefer header.
    try {
        if (ctx.shutting_down)
            throw http_error{
                503, "shutting-down", "the server is shutting down", {}, {{"Retry-After", "5"}}};
        submission s = parse_submission(ctx, req);
        const auto& who = caller(req);
        if (!who.may_submit(s.op.kind))
            throw http_error{403, "forbidden",
                             "this credential may not submit operations of kind " + s.op.kind};
        auto admitted = admit_submission(ctx, who);
        std::optional<std::string> key;
        if (req.has_header("idempotency-key"))
            key = parse_idempotency_key(req.header("idempotency-key"));
        if (ctx.scheduler.stats().pending.load() >=
            static_cast<std::int64_t>(ctx.settings.max_pending))
            throw http_error{429,
                             "queue-full",
                             "too many pending operations; retry later",
                             {},
                             {{"Retry-After", "5"}}};
        auto wait = preferred_wait(req.headers);

        // When nothing waits before it, the operation starts in the commit that accepts it: it is
        // stored as running, its first attempt counted, with both events (rendered here, not on
        // the store's one writer thread). The place is given back unless the job is handed over.
        auto place = ctx.scheduler.reserve(s.op.kind);
        std::shared_ptr<sse::subscription> sub;
        std::optional<sse::subscription_guard> guard;
        if (wait && *wait > 0) {
            // Subscribed before the write: none of the new operation's events can be missed, and
            // its state is known without a read.
            std::vector<std::string> ids{s.op.id};
            sub = co_await ctx.hub.subscribe(std::move(ids), 64);
            guard.emplace(ctx.hub, sub);
        }
        const auto now = s.op.created_at;
        auto step = core::lifecycle::apply(
            std::move(s.op), core::lifecycle::submitted{now, static_cast<bool>(place)});
        // The operation as accepted: pending, even when its job has started since.
        std::string accepted_text = step.events.front().data;
        std::optional<store::idempotency_key> idempotency;
        if (key) idempotency = store::idempotency_key{*key, std::move(s.canonical)};
        auto stored = co_await ctx.db.submit(std::move(step.op), std::move(step.events),
                                             std::move(idempotency));
        if (stored.kind == store::submit_result::key_reused)
            throw unprocessable("idempotency-key-reused",
                                "this Idempotency-Key was used with a different body");
        const bool replayed = stored.kind == store::submit_result::replayed;

        status_view view;
        if (!replayed) {
            core::append_links(accepted_text, stored.op.id, core::status::pending, ctx.base_url);
            view = status_view{stored.op.id, core::status::pending, 0, std::move(accepted_text)};
            auto here = co_await asio::this_coro::executor;
            if (place)
                ctx.scheduler.adopt(std::move(place), std::move(stored.op), here);
            else
                ctx.scheduler.enqueue(core::queue_entry(stored.op), std::move(admitted), here);
        } else {
            guard.reset();
            sub.reset();
            // The key was found among this tenant's, so the operation is this tenant's too.
            auto tenant = tenant_of(req);
            auto op = co_await load(ctx, std::move(tenant), stored.operation_id);
            if (!op)
                throw http_error{409, "idempotency-conflict",
                                 "the operation of this key is gone; retry"};
            view = status_view::of(ctx, *op);
        }

        if (wait && *wait > 0 && !core::is_terminal(view.state)) {
            // Not one conditional expression: g++ 12 miscompiles co_await inside `?:`.
            std::optional<status_view> latest;
            if (sub)
                latest = co_await await_terminal(ctx, req, sub, view.id, *wait);
            else
                latest = co_await wait_terminal(ctx, req, view.id, *wait);
            if (latest) view = std::move(*latest);
        }
        http::response r;
        if (wait && core::is_terminal(view.state)) {
            r = status_response(ctx, view);
            r.set("Preference-Applied", "wait=" + std::to_string(*wait));
        } else {
            r = accepted(ctx, std::move(view));
        }
        r.set("Vary", "Prefer");
        if (replayed) r.set("Idempotent-Replayed", "true");
        co_return r;
    } catch (http_error& e) {
        e.headers.push_back({"Vary", "Prefer"});
        throw;
    }
}

asio::awaitable<http::response> get_status(context& ctx, http::request& req) {
    // Errors too are answers that vary with the request's Accept header.
    try {
        const auto& id = req.params[0];
        if (wants_event_stream(req)) {
            std::vector<std::string> ids{id};
            co_return co_await open_event_stream(ctx, req, std::move(ids));
        }
        require_id(id);
        const int wait = wait_parameter(parse_query(req.query));
        auto op = co_await wait_terminal(ctx, req, id, wait);
        if (!op) throw http_error{404, "not-found", "no operation with id " + id};
        co_return status_response(ctx, *op);
    } catch (http_error& e) {
        e.headers.push_back({"Vary", "Accept"});
        throw;
    }
}

// Weak comparison of an If-None-Match list with a strong ETag.
bool etag_matches(std::string_view header, std::string_view etag) {
    while (!header.empty()) {
        auto comma = header.find(',');
        auto item = header.substr(0, comma);
        header = comma == std::string_view::npos ? std::string_view() : header.substr(comma + 1);
        while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
        while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
        if (item == "*") return true;
        if (item.starts_with("W/")) item.remove_prefix(2);
        if (item == etag) return true;
    }
    return false;
}

asio::awaitable<http::response> get_result(context& ctx, http::request& req) {
    const auto& id = req.params[0];
    require_id(id);
    auto tenant = tenant_of(req);
    auto found = co_await ctx.db.load_result(std::move(tenant), id);
    if (!found) throw http_error{404, "not-found", "no operation with id " + id};
    const auto& op = found->op;
    auto& result = found->result;
    if (!result) {
        json::object extra;
        extra["operation_status"] = core::to_string(op.state);
        throw http_error{409,
                         "operation-not-succeeded",
                         "the operation is " + std::string(core::to_string(op.state)),
                         std::move(extra),
                         {{"Link", "<" + status_url(ctx, id) + ">; rel=\"status\""}}};
    }
    std::string etag = "\"" + id + "\"";
    http::response r;
    r.set("ETag", etag);
    r.set("Cache-Control", "private, max-age=31536000, immutable");
    if (etag_matches(req.header("if-none-match"), etag)) {
        r.status = 304;
        co_return r;
    }
    r.status = 200;
    r.set("Content-Type", result->media_type);
    r.body = std::move(result->body);
    co_return r;
}

asio::awaitable<http::response> delete_operation(context& ctx, http::request& req) {
    const auto& id = req.params[0];
    require_id(id);
    auto tenant = tenant_of(req);
    auto removed = co_await ctx.db.remove(std::move(tenant), id);
    if (removed.kind == store::delete_result::missing)
        throw http_error{404, "not-found", "no operation with id " + id};
    if (removed.kind == store::delete_result::active) {
        json::object extra;
        extra["operation_status"] = core::to_string(removed.state);
        throw http_error{409, "operation-active",
                         "the operation is " + std::string(core::to_string(removed.state)) +
                             "; cancel it before deleting it",
                         std::move(extra)};
    }
    http::response r;
    r.status = 204;
    co_return r;
}

// The 409 of a cancel that comes too late.
http_error finished_problem(const core::operation& op) {
    json::object extra;
    extra["operation_status"] = core::to_string(op.state);
    return http_error{409, "operation-finished",
                      "the operation is already " + std::string(core::to_string(op.state)),
                      std::move(extra)};
}

asio::awaitable<http::response> cancel_operation(context& ctx, http::request& req) {
    const auto& id = req.params[0];
    require_id(id);
    const auto tenant = tenant_of(req);
    // The scheduler knows no tenants: an operation of another tenant must not reach it.
    auto known = co_await load(ctx, tenant, id);
    if (!known) throw http_error{404, "not-found", "no operation with id " + id};
    for (int round = 0; round < 2; ++round) {
        auto found = co_await ctx.scheduler.cancel(id);
        if (found != jobs::scheduler::cancel_state::not_active) {
            auto op = co_await load(ctx, tenant, id);
            if (!op) break;
            // Its job may have recorded an outcome that the scheduler has not heard of yet:
            // then the stored state decides, except that the cancel which stopped the job is
            // answered 202 however fast the job ended.
            const bool ours = found == jobs::scheduler::cancel_state::cancelling &&
                              op->state == core::status::canceled;
            if (core::is_terminal(op->state) && !ours) throw finished_problem(*op);
            // The 202 is a promise: it holds across a crash before the job has stopped.
            if (!core::is_terminal(op->state)) co_await ctx.db.request_cancel(tenant, id);
            http::response r = json_response(202, core::represent_text(*op, ctx.base_url));
            r.set("Location", status_url(ctx, id));
            co_return r;
        }
        auto pending = co_await ctx.db.cancel_pending(tenant, id);
        if (pending.kind == store::cancel_result::missing) break;
        if (pending.kind == store::cancel_result::canceled)
            co_return json_response(200, core::represent_text(pending.op, ctx.base_url));
        if (core::is_terminal(pending.op.state)) throw finished_problem(pending.op);
        if (ctx.db.shared() && round == 1) {
            // Running on another node: the request reaches it through the store, and holds
            // across its crash as here.
            co_await ctx.db.request_cancel(tenant, id);
            pending.op.cancel_requested = true;
            http::response r =
                json_response(202, core::represent_text(pending.op, ctx.base_url));
            r.set("Location", status_url(ctx, id));
            co_return r;
        }
        // Running in the store but not yet seen by the scheduler: ask it again.
    }
    throw http_error{404, "not-found", "no operation with id " + id};
}

asio::awaitable<http::response> list_operations(context& ctx, http::request& req) {
    const auto filter = parse_list_filter(parse_query(req.query));
    store::list_query q(tenant_of(req));
    q.statuses = filter.statuses;
    q.kind = filter.kind;
    q.before = filter.before;
    q.limit = filter.limit;
    auto rows = co_await ctx.db.list(q);
    bool more = rows.size() > static_cast<std::size_t>(q.limit);
    if (more) rows.resize(static_cast<std::size_t>(q.limit));

    // The representations are JSON text already: the page is joined from them, not parsed
    // and serialized again.
    std::string body = R"({"operations":[)";
    for (std::size_t i = 0; i < rows.size(); ++i) {
        if (i) body += ',';
        body += core::represent_text(rows[i], ctx.base_url);
    }
    body += R"(],"next":)";
    if (more) {
        const std::string next =
            ctx.base_url + "/operations?" + next_page_query(filter, rows.back().id);
        core::append_json_string(body, next);
    } else {
        body += "null";
    }
    body += '}';
    co_return json_response(200, std::move(body));
}

}  // namespace

void add_operation_routes(http::router& r, context& ctx) {
    using core::role;
    r.add("POST", "/operations", bind_handler(ctx, role::write, submit));
    r.add("GET", "/operations", bind_handler(ctx, role::read, list_operations));
    r.add("GET", "/operations/{id}/status", bind_handler(ctx, role::read, get_status));
    r.add("GET", "/operations/{id}", bind_handler(ctx, role::read, get_result));
    r.add("DELETE", "/operations/{id}", bind_handler(ctx, role::write, delete_operation));
    r.add("POST", "/operations/{id}/cancel", bind_handler(ctx, role::write, cancel_operation));
}

}  // namespace buzzer::api
