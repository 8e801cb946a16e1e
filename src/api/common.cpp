#include "api/common.hpp"

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/url/parse_query.hpp>
#include <charconv>

#include "core/ulid.hpp"
#include "sse/format.hpp"
#include "store/operations.hpp"

namespace buzzer::api {
namespace asio = boost::asio;

http::response json_response(int status, std::string body) {
    http::response r;
    r.status = status;
    r.set("Content-Type", "application/json");
    r.body = std::move(body);
    return r;
}

std::vector<std::pair<std::string, std::string>> parse_query(std::string_view query) {
    std::vector<std::pair<std::string, std::string>> out;
    if (query.empty()) return out;
    auto parsed = boost::urls::parse_query(query);
    if (!parsed) throw http::http_error{400, "invalid-query", "the query string does not parse"};
    for (auto p : *parsed) out.emplace_back(p.key, p.has_value ? p.value : std::string());
    return out;
}

std::optional<long long> parse_integer(std::string_view text) {
    long long v = 0;
    auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc{} || p != text.data() + text.size() || text.empty()) return std::nullopt;
    return v;
}

int clamp_wait(long long seconds) { return static_cast<int>(std::clamp(seconds, 0LL, 60LL)); }

void require_id(std::string_view id) {
    if (!core::is_ulid(id))
        throw http::http_error{404, "not-found", "no operation with id " + std::string(id)};
}

std::string status_url(const context& ctx, std::string_view id) {
    return ctx.base_url + "/operations/" + std::string(id) + "/status";
}

asio::awaitable<std::optional<core::operation>> load(context& ctx, std::string id) {
    std::optional<core::operation> op;
    co_await ctx.db.read([&](store::connection& db) { op = store::load_operation(db, id); });
    co_return op;
}

asio::awaitable<std::optional<core::operation>> wait_terminal(context& ctx, std::string id,
                                                              int seconds) {
    if (seconds <= 0) co_return co_await load(ctx, id);
    // Subscribe before reading, so that no terminal event can slip between the two.
    std::vector<std::string> ids{id};
    auto sub = co_await ctx.hub.subscribe(std::move(ids), 64);
    sse::subscription_guard guard(ctx.hub, sub);

    auto op = co_await load(ctx, id);
    if (!op || core::is_terminal(op->state)) co_return op;
    // The deadline wakes the mailbox with a null entry.
    auto ex = co_await asio::this_coro::executor;
    asio::steady_timer deadline(ex, std::chrono::seconds(seconds));
    deadline.async_wait([sub](boost::system::error_code ec) {
        if (!ec) sub->box.push(nullptr);
    });
    std::vector<sse::event_ptr> got;
    bool ended = false;
    while (!ended && std::chrono::steady_clock::now() < deadline.expiry()) {
        // Closed (shutdown, overflow): answer from the store.
        bool open = co_await sub->box.wait();
        if (!open) break;
        sub->box.take(got);
        for (const auto& ev : got)
            if (ev && sse::is_terminal_event(ev->type)) ended = true;
    }
    deadline.cancel();
    co_return co_await load(ctx, id);
}

std::string retry_after_for(const core::operation& op) {
    if (op.state == core::status::pending && op.run_after > core::now_ms())
        return std::to_string(
            std::max<core::millis>((op.run_after - core::now_ms() + 999) / 1000, 1));
    return "1";
}

http::response status_response(const context& ctx, const core::operation& op) {
    http::response r = json_response(200, core::represent_text(op, ctx.base_url));
    r.set("Vary", "Accept");
    r.set("Cache-Control", "no-store");
    if (op.state == core::status::succeeded) {
        r.status = 303;
        r.set("Location", ctx.base_url + "/operations/" + op.id);
    } else if (!core::is_terminal(op.state)) {
        r.set("Retry-After", retry_after_for(op));
    }
    return r;
}

}  // namespace buzzer::api
