// Server-Sent Events: GET /operations/ID/status (Accept: text/event-stream) and GET /events.
#include "api/events.hpp"

#include <algorithm>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <set>

#include "api/common.hpp"
#include "core/ulid.hpp"
#include "sse/format.hpp"

namespace buzzer::api {
namespace asio = boost::asio;
using http::http_error;

namespace {

// Events replayed from the store per read.
constexpr int replay_page = 256;

// A stream's progress: the last id sent and the operations whose terminal event went out.
struct stream_state {
    const store::tenant_id& tenant;       // whose operations these are
    const std::vector<std::string>& ids;  // the subscription's
    std::int64_t last = 0;
    std::set<std::string> finished;

    bool done() const { return finished.size() == ids.size(); }
    void saw(const core::event& e) {
        last = std::max(last, e.seq);
        if (sse::is_terminal_event(e.type)) finished.insert(e.operation_id);
    }
};

// The `retry:` line and the stored events after `st.last`, page by page.
asio::awaitable<void> replay(context& ctx, http::body_writer& out, stream_state& st) {
    co_await out.write(sse::format_retry(ctx.settings.sse_retry_ms));
    // Only what is durable: later commits reach the subscription live, after their fsync.
    const std::int64_t upto = ctx.db.published_seq();
    for (;;) {
        auto page = co_await ctx.db.replay(st.tenant, st.ids, st.last, upto, replay_page);
        std::string text;
        for (const auto& e : page) {
            text += sse::format_event(e, ctx.base_url);
            st.saw(e);
        }
        if (!text.empty()) co_await out.write(text);
        if (page.size() < static_cast<std::size_t>(replay_page)) break;
    }
}

// Replays, then sends live events from the mailbox until every operation has ended, the
// client has gone, or the mailbox closed (overflow, shutdown: the client resumes with its last
// id). A null entry is the hub's heartbeat. Everything taken at once goes out in one write.
// One frame for the whole live part: an idle stream holds little more than its socket.
asio::awaitable<void> stream(context& ctx, store::tenant_id tenant, std::vector<std::string> ids,
                             std::int64_t after, std::set<std::string> ended,
                             http::body_writer& out) {
    // Subscribe first, then replay: whatever commits in between arrives live, and live
    // events the replay already covered are dropped by id.
    auto sub = co_await ctx.hub.subscribe(std::move(ids), ctx.settings.sse_backlog, true);
    sse::subscription_guard guard(ctx.hub, sub);
    // A slow reader's mailbox overflows while its stream may be stuck in a write that the
    // client does not take: then end the connection at once; the client resumes by id.
    // One allocation: the hook's function holds only this pointer (no heap of its own).
    struct abort_hook {
        asio::any_io_executor ex;
        http::body_writer* out;
        bool alive = true;
    };
    auto hook = std::make_shared<abort_hook>(co_await asio::this_coro::executor, &out);
    struct alive_guard {
        std::shared_ptr<abort_hook> hook;
        ~alive_guard() { hook->alive = false; }
    } alive_until_return{hook};
    sub->box.on_overflow([hook] {
        asio::post(hook->ex, [hook] {
            if (hook->alive) hook->out->abort();
        });
    });
    // Operations whose terminal event the client had seen count as sent.
    stream_state st{tenant, sub->operation_ids, after, std::move(ended)};
    co_await replay(ctx, out, st);
    if (st.done()) co_return;
    out.watch_closed([sub] { sub->box.close(); });

    std::vector<sse::event_ptr> got;
    std::string text;
    while (!st.done()) {
        bool open = co_await sub->box.wait();
        if (!open) {
            if (sub->box.overflowed()) out.abort();  // its socket may be full: no last chunk
            co_return;
        }
        sub->box.take(got);
        text.clear();
        sse::event_ptr single;
        bool beat = false;
        auto first_commit = std::chrono::steady_clock::time_point::max();
        for (const auto& ev : got) {
            if (!ev) {
                beat = true;
            } else if (ev->seq > st.last) {  // else already sent by the replay
                if (!single && text.empty()) {
                    single = ev;  // the common case: one event, written from its own frame
                } else {
                    if (single) text = std::exchange(single, nullptr)->frame;
                    text += ev->frame;
                }
                st.saw(*ev);
                first_commit = std::min(first_commit, ev->committed);
            }
        }
        got.clear();
        if (!single && text.empty() && beat) text = sse::keepalive;
        if (!single && text.empty()) continue;
        std::string_view data = single ? std::string_view(single->frame) : std::string_view(text);
        co_await out.write(data);
        single.reset();
        sub->touch();
        if (first_commit != std::chrono::steady_clock::time_point::max())
            ctx.hub.delivery.observe(std::chrono::steady_clock::now() - first_commit);
        if (text.capacity() > 4096) text = std::string();  // idle streams keep no big buffers
    }
}

}  // namespace

asio::awaitable<http::response> open_event_stream(context& ctx, const http::request& req,
                                                  std::vector<std::string> ids) {
    auto query = parse_query(req.query);
    std::optional<std::string_view> last_event_id;
    if (req.has_header("last-event-id")) last_event_id = req.header("last-event-id");
    std::int64_t after = resume_after(last_event_id, query);
    for (const auto& id : ids)
        if (!core::is_ulid(id)) throw http_error{404, "not-found", "no operation with id " + id};

    // Which operations exist, and which of them have ended at or before `after`.
    // Read before the stream subscribes: every event published later has a greater id.
    // Operations of other tenants are as unknown: 404, and nothing of them is ever replayed.
    std::int64_t newest = ctx.db.published_seq();
    // Another node may have sent the client ids this one has yet to publish: catch up first.
    if (auto* nodes = ctx.db.shared(); nodes && after > newest) {
        co_await nodes->catch_up();
        newest = ctx.db.published_seq();
    }
    auto tenant = tenant_of(req);
    const auto ends = co_await ctx.db.stream_ends(tenant, ids);
    std::set<std::string> ended;
    for (std::size_t i = 0; i < ids.size(); ++i) {
        if (!ends[i]) throw http_error{404, "not-found", "no operation with id " + ids[i]};
        if (*ends[i] != 0 && after >= *ends[i]) ended.insert(ids[i]);
    }
    http::response r;
    if (ended.size() == ids.size()) {
        // Nothing more will come: 204 tells EventSource to stop reconnecting.
        r.status = 204;
        r.set("Cache-Control", "no-store");
        r.set("Vary", "Accept");
        co_return r;
    }
    // An id past the newest event replays nothing and goes live: events written from now on
    // have greater ids than `newest`, whatever the client's id.
    after = std::min(after, newest);
    r.status = 200;
    r.set("Content-Type", "text/event-stream");
    r.set("Cache-Control", "no-store");
    r.set("X-Accel-Buffering", "no");
    r.set("Vary", "Accept");
    r.stream = [&ctx, tenant = std::move(tenant), ids = std::move(ids), after,
                ended = std::move(ended)](http::body_writer& out) mutable {
        return stream(ctx, std::move(tenant), std::move(ids), after, std::move(ended),
                      out);  // called once
    };
    co_return r;
}

bool wants_event_stream(const http::request& req) {
    // Named, acceptable, and not less wanted than JSON (EventSource sends only it).
    return accepts_event_stream(req.header("accept"));
}

namespace {

asio::awaitable<http::response> events(context& ctx, http::request& req) {
    auto ids = stream_operations(parse_query(req.query));
    co_return co_await open_event_stream(ctx, req, std::move(ids));
}

}  // namespace

void add_event_routes(http::router& r, context& ctx) {
    r.add("GET", "/events", bind_handler(ctx, core::role::read, events));
}

}  // namespace buzzer::api
