#include "api/common.hpp"

#include <algorithm>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "core/ulid.hpp"
#include "sse/format.hpp"

namespace buzzer::api {
namespace asio = boost::asio;

const core::principal& caller(const http::request& req) {
    static const core::principal open_mode;
    return req.principal ? *req.principal : open_mode;
}

store::tenant_id tenant_of(const http::request& req) {
    return store::tenant_id(caller(req).tenant);
}

http::response json_response(int status, std::string body) {
    http::response r;
    r.status = status;
    r.set("Content-Type", "application/json");
    r.body = std::move(body);
    return r;
}

void require_id(std::string_view id) {
    if (!core::is_ulid(id))
        throw http::http_error{404, "not-found", "no operation with id " + std::string(id)};
}

std::string status_url(const context& ctx, std::string_view id) {
    std::string url;
    url.reserve(ctx.base_url.size() + id.size() + 19);
    url.append(ctx.base_url).append("/operations/").append(id).append("/status");
    return url;
}

asio::awaitable<std::optional<core::operation>> load(context& ctx, store::tenant_id tenant,
                                                     std::string id) {
    co_return co_await ctx.db.load(std::move(tenant), std::move(id));
}

status_view status_view::of(const context& ctx, const core::operation& op) {
    return {op.id, op.state, op.run_after, core::represent_text(op, ctx.base_url)};
}

namespace {

// The view of the operation as stored now; empty when there is none.
asio::awaitable<std::optional<status_view>> load_view(context& ctx, store::tenant_id tenant,
                                                      std::string id) {
    std::optional<status_view> view;
    if (auto op = co_await load(ctx, std::move(tenant), std::move(id)))
        view = status_view::of(ctx, *op);
    co_return view;
}

}  // namespace

asio::awaitable<std::optional<status_view>> wait_terminal(context& ctx, const http::request& req,
                                                          std::string id, int seconds) {
    auto tenant = tenant_of(req);
    if (seconds <= 0) co_return co_await load_view(ctx, std::move(tenant), std::move(id));
    // Subscribe before reading, so that no terminal event can slip between the two.
    std::vector<std::string> ids{id};
    auto sub = co_await ctx.hub.subscribe(std::move(ids), 64);
    sse::subscription_guard guard(ctx.hub, sub);

    // An operation of another tenant is as missing: nothing of it is awaited.
    auto view = co_await load_view(ctx, std::move(tenant), id);
    if (!view || core::is_terminal(view->state)) co_return view;
    co_return co_await await_terminal(ctx, req, sub, std::move(id), seconds);
}

asio::awaitable<std::optional<status_view>> await_terminal(
    context& ctx, const http::request& req, const std::shared_ptr<sse::subscription>& sub,
    std::string id, int seconds) {
    // The deadline wakes the mailbox with a null entry, and so does the client going away.
    auto ex = co_await asio::this_coro::executor;
    asio::steady_timer deadline(ex, std::chrono::seconds(seconds));
    deadline.async_wait([sub](boost::system::error_code ec) {
        if (!ec) sub->box.push(nullptr);
    });
    auto gone = std::make_shared<bool>(false);
    if (req.on_client_gone)
        req.on_client_gone([sub, gone] {
            *gone = true;
            sub->box.push(nullptr);
        });
    std::vector<sse::event_ptr> got;
    sse::event_ptr terminal;
    while (!terminal && !*gone && std::chrono::steady_clock::now() < deadline.expiry()) {
        // Closed (shutdown, overflow): answer from the store.
        bool open = co_await sub->box.wait();
        if (!open) break;
        sub->box.take(got);
        for (const auto& ev : got)
            if (ev && ev->operation_id == id && sse::is_terminal_event(ev->type)) terminal = ev;
    }
    deadline.cancel();
    if (!terminal) {
        auto tenant = tenant_of(req);
        co_return co_await load_view(ctx, std::move(tenant), std::move(id));
    }
    // A terminal event carries the final representation: no read is needed.
    auto state = *sse::event_state(terminal->type);
    std::optional<status_view> view(
        std::in_place,
        status_view{std::move(id), state, 0, sse::event_data(*terminal, ctx.base_url)});
    co_return view;
}

std::string retry_after_for(core::status state, core::millis run_after) {
    if (state == core::status::pending && run_after > core::now_ms())
        return std::to_string(std::max<core::millis>((run_after - core::now_ms() + 999) / 1000, 1));
    return "1";
}

http::response status_response(const context& ctx, const status_view& v) {
    http::response r = json_response(200, v.text);
    r.set("Vary", "Accept");
    r.set("Cache-Control", "no-store");
    if (v.state == core::status::succeeded) {
        r.status = 303;
        r.set("Location", ctx.base_url + "/operations/" + v.id);
    } else if (!core::is_terminal(v.state)) {
        r.set("Retry-After", retry_after_for(v.state, v.run_after));
    }
    return r;
}

}  // namespace buzzer::api
