#include "sse/hub.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/test/unit_test.hpp>
#include <future>
#include <thread>

#include "support/run_coroutine.hpp"

using namespace buzzer;
namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace {

core::event make_event(std::int64_t seq, std::string op, std::string type = "progress") {
    return core::event{seq, std::move(op), std::move(type), "{}", {}};
}

sse::event_ptr shared_event(std::int64_t seq) {
    return std::make_shared<const sse::live_event>(make_event(seq, "a"), "");
}

// Waits on `box` with a deadline: the test fails instead of hanging.
asio::awaitable<bool> wait_or_fail(sse::mailbox& box, std::chrono::milliseconds limit = 5s) {
    auto ex = co_await asio::this_coro::executor;
    asio::steady_timer guard(ex, limit);
    guard.async_wait([&box](boost::system::error_code ec) {
        if (!ec) box.close();  // a stuck wait ends, and the checks below see it
    });
    auto start = std::chrono::steady_clock::now();
    bool open = co_await box.wait();
    guard.cancel();
    BOOST_TEST((std::chrono::steady_clock::now() - start < limit));
    co_return open;
}

// Runs `make()` on a fresh io_context until no handler is ready: the coroutine, not finished,
// is then suspended in the wait it must reach (its only one). Then `from_outside` runs on
// another thread while the io_context runs to the end. No sleep, no race with the wait.
template <class F, class G>
void run_suspended_then(F make, G from_outside) {
    asio::io_context io;
    auto done = asio::co_spawn(io, make(), asio::use_future);
    io.poll();
    BOOST_TEST_REQUIRE((done.wait_for(0s) == std::future_status::timeout),
                       "the coroutine ended before it waited");
    std::thread other(std::move(from_outside));
    io.run();
    other.join();
    done.get();
}

// Runs `body(hub)` with a hub on a fresh io_context. The hub is destroyed after io.run() has
// returned (every handler it posted has run) and before the io_context.
template <class F>
void with_hub(std::chrono::steady_clock::duration heartbeat, F body, unsigned threads = 1) {
    asio::io_context io(static_cast<int>(threads));
    sse::hub h(io.get_executor(), heartbeat);
    auto done = asio::co_spawn(io, body(h), asio::use_future);
    std::vector<std::thread> pool;
    for (unsigned i = 1; i < threads; ++i) pool.emplace_back([&io] { io.run(); });
    io.run();
    for (auto& t : pool) t.join();
    done.get();
}

}  // namespace

BOOST_AUTO_TEST_SUITE(mailbox)

BOOST_AUTO_TEST_CASE(a_push_from_another_thread_wakes_the_waiter) {
    sse::mailbox box(8);
    std::vector<sse::event_ptr> got;
    bool open = false;
    run_suspended_then(
        [&]() -> asio::awaitable<void> {
            open = co_await wait_or_fail(box);
            box.take(got);
        },
        [&box] {
            box.push(shared_event(1));
            box.push(shared_event(2));
        });
    BOOST_TEST(open);
    BOOST_TEST_REQUIRE(!got.empty());
    BOOST_TEST(got.front()->seq == 1);
}

BOOST_AUTO_TEST_CASE(waiting_with_events_queued_returns_at_once_and_take_empties) {
    sse::mailbox box(8);
    box.push(shared_event(1));
    box.push(nullptr);  // a wake-up counts as something to take
    std::vector<sse::event_ptr> got;
    test::run_coroutine([&]() -> asio::awaitable<void> {
        bool open = co_await wait_or_fail(box, 1s);
        BOOST_TEST(open);
        box.take(got);
    });
    BOOST_TEST(got.size() == 2u);
    BOOST_TEST(!got[1]);
    BOOST_TEST(box.empty());
}

BOOST_AUTO_TEST_CASE(overflow_closes_it_and_wakes_the_waiter_with_false) {
    sse::mailbox box(3);
    BOOST_TEST(box.push(shared_event(1)));
    BOOST_TEST(box.push(nullptr));  // wake-ups do not count against the capacity
    BOOST_TEST(box.push(shared_event(2)));
    BOOST_TEST(box.push(shared_event(3)));
    BOOST_TEST(!box.push(shared_event(4)));
    BOOST_TEST(!box.push(shared_event(5)));  // stays closed
    bool open = true;
    test::run_coroutine([&]() -> asio::awaitable<void> { open = co_await wait_or_fail(box, 1s); });
    BOOST_TEST(!open);
    BOOST_TEST(box.empty());  // dropped: the reader resumes from the store by id
}

BOOST_AUTO_TEST_CASE(overflow_notifies_once_a_subscriber_that_is_not_waiting) {
    // The subscriber may be stuck writing to its client: the notification reaches it anyway.
    sse::mailbox box(2);
    int notified = 0;
    box.on_overflow([&notified] { ++notified; });
    BOOST_TEST(box.push(shared_event(1)));
    BOOST_TEST(box.push(shared_event(2)));
    BOOST_TEST(!box.overflowed());
    BOOST_TEST(notified == 0);
    BOOST_TEST(!box.push(shared_event(3)));
    BOOST_TEST(box.overflowed());
    BOOST_TEST(notified == 1);
    BOOST_TEST(!box.push(shared_event(4)));
    BOOST_TEST(notified == 1);
    // Registered after the overflow: called at once.
    int late = 0;
    box.on_overflow([&late] { ++late; });
    BOOST_TEST(late == 1);
}

BOOST_AUTO_TEST_CASE(close_is_not_an_overflow) {
    sse::mailbox box(2);
    int notified = 0;
    box.on_overflow([&notified] { ++notified; });
    box.push(shared_event(1));
    box.close();
    BOOST_TEST(!box.push(shared_event(2)));
    BOOST_TEST(!box.push(shared_event(3)));
    BOOST_TEST(!box.overflowed());
    BOOST_TEST(notified == 0);
}

BOOST_AUTO_TEST_CASE(close_wakes_a_suspended_waiter) {
    sse::mailbox box(8);
    bool open = true;
    run_suspended_then([&]() -> asio::awaitable<void> { open = co_await wait_or_fail(box); },
                       [&box] { box.close(); });
    BOOST_TEST(!open);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(hub)

BOOST_AUTO_TEST_CASE(publishes_to_the_subscribers_of_an_operation_only) {
    std::vector<sse::event_ptr> got_a, got_b;
    std::size_t left = 99;
    with_hub(
        3600s,
        [&](sse::hub& h) -> asio::awaitable<void> {
            std::vector<std::string> ids_a{"a"};
            auto a = co_await h.subscribe(std::move(ids_a), 16);
            std::vector<std::string> ids_b{"b", "a"};
            auto b = co_await h.subscribe(std::move(ids_b), 16);
            BOOST_TEST(h.subscribers() == 2u);
            h.publish({make_event(1, "a"), make_event(2, "b"), make_event(3, "c")});
            bool open = co_await wait_or_fail(a->box);
            BOOST_TEST(open);
            a->box.take(got_a);
            // b follows two operations: wait until both events have arrived.
            std::vector<sse::event_ptr> more;
            while (got_b.size() < 2) {
                open = co_await wait_or_fail(b->box);
                BOOST_TEST_REQUIRE(open);
                b->box.take(more);
                got_b.insert(got_b.end(), more.begin(), more.end());
            }
            h.unsubscribe(a);
            h.unsubscribe(b);
            h.unsubscribe(b);  // idempotent
            // The removals run on the hub's strand: wait for them, with a deadline.
            asio::steady_timer t(co_await asio::this_coro::executor);
            auto limit = std::chrono::steady_clock::now() + 5s;
            while (h.subscribers() != 0 && std::chrono::steady_clock::now() < limit) {
                t.expires_after(1ms);
                co_await t.async_wait(asio::use_awaitable);
            }
            left = h.subscribers();
            h.shutdown();
        },
        2);
    BOOST_TEST(left == 0u);
    BOOST_TEST_REQUIRE(got_a.size() == 1u);
    BOOST_TEST(got_a[0]->seq == 1);
    BOOST_TEST_REQUIRE(got_b.size() == 2u);
    BOOST_TEST(got_b[0]->seq == 1);
    BOOST_TEST(got_b[1]->seq == 2);
}

BOOST_AUTO_TEST_CASE(an_idle_heartbeat_subscriber_gets_a_wake_up_and_others_do_not) {
    bool beat = false, quiet_woken = false;
    std::chrono::steady_clock::duration waited{};
    with_hub(100ms, [&](sse::hub& h) -> asio::awaitable<void> {
        std::vector<std::string> ids_quiet{"q"};
        auto quiet = co_await h.subscribe(std::move(ids_quiet), 16, false);
        auto start = std::chrono::steady_clock::now();
        std::vector<std::string> ids_beating{"a"};
        auto beating = co_await h.subscribe(std::move(ids_beating), 16, true);
        bool open = co_await wait_or_fail(beating->box, 3s);
        waited = std::chrono::steady_clock::now() - start;
        std::vector<sse::event_ptr> got;
        beating->box.take(got);
        beat = open && got.size() == 1 && !got[0];
        quiet_woken = !quiet->box.empty();
        h.unsubscribe(quiet);
        h.unsubscribe(beating);
        h.shutdown();
    });
    BOOST_TEST(beat);
    BOOST_TEST(!quiet_woken);
    BOOST_TEST(waited >= 100ms);
}

BOOST_AUTO_TEST_CASE(shutdown_closes_every_mailbox_and_refuses_new_subscribers) {
    bool open_after_shutdown = true, late_open = true;
    with_hub(3600s, [&](sse::hub& h) -> asio::awaitable<void> {
        std::vector<std::string> ids_s{"a"};
        auto s = co_await h.subscribe(std::move(ids_s), 16, true);
        h.shutdown();
        open_after_shutdown = co_await wait_or_fail(s->box);
        std::vector<std::string> ids_late{"a"};
        auto late = co_await h.subscribe(std::move(ids_late), 16);
        late_open = co_await wait_or_fail(late->box);
    });
    BOOST_TEST(!open_after_shutdown);
    BOOST_TEST(!late_open);
}

BOOST_AUTO_TEST_SUITE_END()
