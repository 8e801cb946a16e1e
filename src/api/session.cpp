// /session: a cookie for browsers, whose EventSource cannot send an Authorization header.
#include "api/access.hpp"
#include "api/common.hpp"

namespace buzzer::api {
namespace asio = boost::asio;

namespace {

// The attributes every Set-Cookie of the session carries.
std::string cookie_attributes(const context& ctx, const http::request& req) {
    std::string a = "; HttpOnly; Path=/; SameSite=Strict";
    if (req.secure || ctx.base_url.starts_with("https:")) a += "; Secure";
    return a;
}

asio::awaitable<http::response> open_session(context& ctx, http::request& req) {
    // A bearer credential only: the cookie does not count on POST, so a session cannot be
    // renewed by a page that merely holds one.
    co_await authorize(ctx, req, core::role::read);
    http::response r;
    r.status = 204;
    if (!req.principal) co_return r;  // open mode: nothing to remember
    const auto& who = *req.principal;
    auto value = ctx.gate.credentials.session_for(who);
    const auto now = core::now_ms();
    auto until = who.expires_at ? std::min(who.expires_at, now + auth::session_lifetime_ms)
                                : now + auth::session_lifetime_ms;
    r.set("Set-Cookie", std::string(auth::session_cookie) + "=" + value + "; Max-Age=" +
                            std::to_string(std::max<core::millis>(0, until - now) / 1000) +
                            cookie_attributes(ctx, req));
    r.set("Cache-Control", "no-store");
    co_return r;
}

asio::awaitable<http::response> close_session(context& ctx, http::request& req) {
    http::response r;
    r.status = 204;
    r.set("Set-Cookie",
          std::string(auth::session_cookie) + "=; Max-Age=0" + cookie_attributes(ctx, req));
    co_return r;
}

}  // namespace

void add_session_routes(http::router& r, context& ctx) {
    r.add("POST", "/session", [&ctx](http::request& req) { return open_session(ctx, req); });
    r.add("DELETE", "/session", [&ctx](http::request& req) { return close_session(ctx, req); });
}

}  // namespace buzzer::api
