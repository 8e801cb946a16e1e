#include "api/access.hpp"

#include <cmath>

#include "api/common.hpp"
#include "core/log.hpp"

namespace buzzer::api {
namespace asio = boost::asio;
using http::http_error;

namespace {

// Refused credentials logged per second at most; a flood becomes one summary line a second.
constexpr unsigned refusal_lines_per_second = 10;

constexpr std::string_view allowed_methods = "GET, HEAD, POST, DELETE";
constexpr std::string_view allowed_headers =
    "Authorization, Content-Type, Idempotency-Key, Prefer, Last-Event-ID, Cache-Control";
constexpr std::string_view exposed_headers =
    "Location, Operation-Location, Retry-After, Idempotent-Replayed, Preference-Applied, Link, "
    "WWW-Authenticate";

std::string seconds_text(double s) {
    return std::to_string(std::max<long long>(1, static_cast<long long>(std::ceil(s))));
}

// Adds `token` to the Vary header of `res`, creating it when there is none.
void add_vary(http::response& res, std::string_view token) {
    for (auto& f : res.headers)
        if (http::iequals(f.name, "vary")) {
            f.value += ", ";
            f.value += token;
            return;
        }
    res.set("Vary", std::string(token));
}

// The CORS policy when `req` comes from a listed origin; else null.
const auth::cors_settings* listed_origin(const auth::settings& s, const http::request& req) {
    if (!s.cors || !req.has_header("origin")) return nullptr;
    return s.cors->allows(req.header("origin")) ? &*s.cors : nullptr;
}

std::optional<http::response> before(context& ctx, http::request& req) {
    auto settings = ctx.gate.credentials.current();
    const auto now = std::chrono::steady_clock::now();
    if (settings->enabled && settings->failure_limit) {
        if (double wait = ctx.gate.failures.blocked(req.remote, now); wait > 0) {
            ctx.gate.failure_rejections.fetch_add(1, std::memory_order_relaxed);
            http_error e{429,
                         "too-many-failures",
                         "too many failed authentications from this address; retry later",
                         {},
                         {{"Retry-After", seconds_text(wait)}}};
            return http::problem_response(e, req.path);
        }
    }
    if (req.method == "OPTIONS" && req.has_header("origin") &&
        req.has_header("access-control-request-method")) {
        const auto* cors = listed_origin(*settings, req);
        if (!cors) {
            http_error e{403, "forbidden", "this origin may not call this server"};
            return http::problem_response(e, req.path);
        }
        http::response r;
        r.status = 204;
        r.set("Access-Control-Allow-Methods", std::string(allowed_methods));
        r.set("Access-Control-Allow-Headers", std::string(allowed_headers));
        r.set("Access-Control-Max-Age", std::to_string(cors->max_age_s));
        return r;
    }
    return std::nullopt;
}

void after(context& ctx, const http::request& req, http::response& res) {
    auto settings = ctx.gate.credentials.current();
    if (res.status == 401 && settings->enabled && settings->failure_limit)
        ctx.gate.failures.failed(req.remote, std::chrono::steady_clock::now());
    const auto* cors = listed_origin(*settings, req);
    if (!cors) return;
    res.set("Access-Control-Allow-Origin", std::string(req.header("origin")));
    if (cors->credentials) res.set("Access-Control-Allow-Credentials", "true");
    res.set("Access-Control-Expose-Headers", std::string(exposed_headers));
    add_vary(res, "Origin");
}

}  // namespace

void access::log_refusal(const std::string& line) {
    const auto now = std::chrono::steady_clock::now();
    std::uint64_t skipped = 0;
    {
        std::lock_guard lock(log_mutex_);
        if (now - window_ >= std::chrono::seconds(1)) {
            window_ = now;
            in_window_ = 0;
        }
        if (in_window_ >= refusal_lines_per_second) {
            ++unlogged_;
            return;
        }
        ++in_window_;
        skipped = unlogged_;
        unlogged_ = 0;
    }
    core::log(core::level::warn,
              skipped ? line + " (and " + std::to_string(skipped) + " more not logged)" : line);
}

void add_access_hooks(http::router& r, context& ctx) {
    r.before([&ctx](http::request& req) { return before(ctx, req); });
    r.after([&ctx](const http::request& req, http::response& res) { after(ctx, req, res); });
}

asio::awaitable<void> authorize(context& ctx, http::request& req, core::role needed) {
    auto& credentials = ctx.gate.credentials;
    if (!credentials.enabled()) co_return;
    std::optional<std::string_view> authorization, cookie;
    if (req.has_header("authorization")) authorization = req.header("authorization");
    if (req.has_header("cookie")) cookie = req.header("cookie");
    const bool safe = req.method == "GET" || req.method == "HEAD";
    auto v = co_await credentials.check(authorization, cookie, safe);
    auto refused = [&](auth::refusal why, const std::string& detail) {
        credentials.count(why);
        std::string line = "refused " + std::string(auth::to_string(why)) + " credential from " +
                           (req.remote.empty() ? std::string("?") : req.remote) + " for " +
                           req.method + " " + req.path;
        if (!v.credential.empty()) line += " (" + v.credential + ")";
        ctx.gate.log_refusal(line + ": " + detail);
    };
    if (v.who && !v.who->allows(needed)) {
        v.credential = v.who->credential;
        v.why = auth::refusal::forbidden;
        v.detail = "this credential's role (" + std::string(core::to_string(v.who->level)) +
                   ") does not allow this request; it needs " +
                   std::string(core::to_string(needed));
        v.who = nullptr;
    }
    if (v.who) {
        req.principal = std::move(v.who);
        co_return;
    }
    refused(v.why, v.detail);
    if (v.why == auth::refusal::forbidden) throw http_error{403, "forbidden", v.detail};
    std::string challenge = R"(Bearer realm="buzzer")";
    if (v.credential_sent) challenge += R"(, error="invalid_token")";
    throw http_error{401, "unauthorized", v.detail, {}, {{"WWW-Authenticate", challenge}}};
}

asio::awaitable<http::response> guarded(context& ctx, http::request& req, core::role needed,
                                        handler_function fn) {
    co_await authorize(ctx, req, needed);
    co_return co_await fn(ctx, req);
}

jobs::scheduler::pending_claim admit_submission(context& ctx, const core::principal& who) {
    auto settings = ctx.gate.credentials.current();
    const auto* q = settings->quota_for(who.tenant);
    auto refuse = [&](std::string detail, std::string retry_after) {
        ctx.gate.quota_rejections.fetch_add(1, std::memory_order_relaxed);
        throw http_error{429,
                         "quota-exceeded",
                         std::move(detail),
                         {},
                         {{"Retry-After", std::move(retry_after)}}};
    };
    auto claim = ctx.scheduler.admit(who.tenant, q ? q->max_pending : std::nullopt);
    if (!claim)
        refuse("this tenant has " + std::to_string(*q->max_pending) +
                   " pending operations, its quota; retry once some have started",
               "1");
    if (q)
        if (double wait = ctx.gate.rates.take(who.tenant, *q, std::chrono::steady_clock::now());
            wait > 0)
            refuse("this tenant submits faster than its quota allows; retry later",
                   seconds_text(wait));
    return std::move(*claim);
}

}  // namespace buzzer::api
