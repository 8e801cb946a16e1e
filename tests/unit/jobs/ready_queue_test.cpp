#include "jobs/ready_queue.hpp"

#include <boost/test/unit_test.hpp>
#include <vector>

using namespace buzzer;
using jobs::ready_queue;

namespace {

constexpr core::millis now = 1'000'000;

core::queued entry(std::string id, std::string kind = "a", int priority = 0, std::int64_t order = 0,
                   core::millis run_after = 0) {
    return {std::move(id), std::move(kind), priority, run_after, order};
}

auto any_kind = [](std::string_view) { return true; };

// Pops everything `may_run` lets run, in order.
template <class MayRun>
std::vector<std::string> drain(ready_queue& q, MayRun may_run) {
    std::vector<std::string> out;
    while (const auto* next = q.peek(may_run)) out.push_back(q.pop(next).id);
    return out;
}

using ids = std::vector<std::string>;

}  // namespace

BOOST_AUTO_TEST_SUITE(ready_queue_order)

BOOST_AUTO_TEST_CASE(higher_priority_first_then_the_oldest) {
    ready_queue q;
    q.add(entry("late-low", "a", 0, 3), now);
    q.add(entry("early-low", "a", 0, 1), now);
    q.add(entry("high", "b", 5, 9), now);
    q.add(entry("negative", "a", -5, 0), now);
    q.add(entry("early-low-twin", "b", 0, 1), now);  // same order: by id
    BOOST_TEST(q.size() == 5u);
    BOOST_TEST(
        drain(q, any_kind) == (ids{"high", "early-low", "early-low-twin", "late-low", "negative"}),
        boost::test_tools::per_element());
    BOOST_TEST(q.size() == 0u);
}

BOOST_AUTO_TEST_CASE(a_kind_without_room_is_passed_over_and_keeps_its_place) {
    ready_queue q;
    q.add(entry("a1", "a", 9, 1), now);
    q.add(entry("b1", "b", 0, 2), now);
    q.add(entry("a2", "a", 9, 3), now);
    auto not_a = [](std::string_view kind) { return kind != "a"; };
    BOOST_TEST(drain(q, not_a) == ids{"b1"}, boost::test_tools::per_element());
    BOOST_TEST(!q.peek(not_a));
    BOOST_TEST(drain(q, any_kind) == (ids{"a1", "a2"}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(an_id_is_queued_once) {
    ready_queue q;
    BOOST_TEST(q.add(entry("x"), now));
    BOOST_TEST(!q.add(entry("x", "b", 100), now));
    BOOST_TEST(q.size() == 1u);
    BOOST_TEST(q.contains("x"));
    BOOST_TEST(q.peek(any_kind)->kind == "a");
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(ready_queue_delays)

BOOST_AUTO_TEST_CASE(a_delayed_retry_waits_until_it_is_due) {
    ready_queue q;
    q.add(entry("later", "a", 50, 1, now + 200), now);
    q.add(entry("soon", "a", 0, 2, now + 100), now);
    q.add(entry("due", "a", 0, 3, now), now);  // run_after == now: ready at once
    BOOST_TEST(q.next_due().value() == now + 100);
    BOOST_TEST(drain(q, any_kind) == ids{"due"}, boost::test_tools::per_element());
    q.release_due(now + 99);
    BOOST_TEST(!q.peek(any_kind));
    q.release_due(now + 100);
    BOOST_TEST(q.next_due().value() == now + 200);
    BOOST_TEST(drain(q, any_kind) == ids{"soon"}, boost::test_tools::per_element());
    q.release_due(now + 500);
    BOOST_TEST(!q.next_due());
    BOOST_TEST(drain(q, any_kind) == ids{"later"}, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(remove_takes_out_ready_and_delayed_entries) {
    ready_queue q;
    q.add(entry("ready", "a", 0, 1), now);
    q.add(entry("delayed", "a", 0, 2, now + 10), now);
    q.add(entry("twin", "a", 0, 3, now + 10), now);  // same due time
    BOOST_TEST(q.remove("delayed").has_value());
    BOOST_TEST(!q.remove("delayed").has_value());
    BOOST_TEST(q.remove("ready").has_value());
    BOOST_TEST(!q.remove("unknown").has_value());
    BOOST_TEST(q.size() == 1u);
    q.release_due(now + 10);
    BOOST_TEST(drain(q, any_kind) == ids{"twin"}, boost::test_tools::per_element());
    // Removed, then queued again: it runs once, at its new place.
    q.add(entry("back", "a", 0, 4), now);
    q.remove("back");
    q.add(entry("back", "a", 0, 5), now);
    BOOST_TEST(drain(q, any_kind) == ids{"back"}, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_SUITE_END()
