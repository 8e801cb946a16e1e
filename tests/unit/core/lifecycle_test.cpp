#include "core/lifecycle.hpp"

#include <boost/json.hpp>
#include <boost/test/unit_test.hpp>
#include <ostream>

namespace buzzer::core {
// How Boost.Test prints a status in a failed check.
std::ostream& operator<<(std::ostream& out, status s) { return out << to_string(s); }
}  // namespace buzzer::core

using namespace buzzer;
namespace lc = buzzer::core::lifecycle;
namespace json = boost::json;
using core::status;

namespace {

constexpr core::millis t0 = 1'700'000'000'000;

core::operation op_in(status s, int attempt = 0, int max_attempts = 3) {
    core::operation op;
    op.id = "01JDB6Q6X8Z3M9J1V7Q0000001";
    op.kind = "echo";
    op.input = R"({"x":1})";
    op.max_attempts = max_attempts;
    op.timeout_s = 2.5;
    op.created_at = t0;
    op.state = s;
    op.attempt = attempt;
    op.row = 7;
    if (s != status::pending || attempt > 0) op.started_at = t0 + 1;
    if (core::is_terminal(s)) op.finished_at = t0 + 2;
    return op;
}

json::object data_of(const core::event& e) { return json::parse(e.data).as_object(); }

std::vector<std::string> types_of(const lc::step& s) {
    std::vector<std::string> out;
    for (const auto& e : s.events) out.push_back(e.type);
    return out;
}

using types = std::vector<std::string>;

}  // namespace

BOOST_AUTO_TEST_SUITE(lifecycle)

BOOST_AUTO_TEST_CASE(a_submission_is_pending_with_its_event) {
    auto s = lc::apply(op_in(status::pending), lc::submitted{t0});
    BOOST_TEST(static_cast<bool>(s));
    BOOST_TEST(s.op.state == status::pending);
    BOOST_TEST(s.op.attempt == 0);
    BOOST_TEST(types_of(s) == types{"pending"}, boost::test_tools::per_element());
    BOOST_TEST(s.events[0].operation_id == s.op.id);
    BOOST_TEST(s.events[0].seq == 0);
    BOOST_TEST(s.events[0].data == core::state_text(s.op));
}

BOOST_AUTO_TEST_CASE(a_submission_started_at_once_counts_its_first_attempt) {
    auto in = op_in(status::pending);
    in.started_at.reset();
    auto s = lc::apply(in, lc::submitted{t0 + 5, true});
    BOOST_TEST(s.op.state == status::running);
    BOOST_TEST(s.op.attempt == 1);
    BOOST_TEST(s.op.started_at.value() == t0 + 5);
    BOOST_TEST(types_of(s) == (types{"pending", "running"}), boost::test_tools::per_element());
    // The pending event shows the operation as accepted, before its attempt began.
    BOOST_TEST(data_of(s.events[0]).at("status") == "pending");
    BOOST_TEST(data_of(s.events[0]).at("attempt") == 0);
    BOOST_TEST(data_of(s.events[1]).at("status") == "running");
    BOOST_TEST(data_of(s.events[1]).at("attempt") == 1);
}

BOOST_AUTO_TEST_CASE(a_start_begins_the_next_attempt_afresh) {
    auto in = op_in(status::pending, 1);
    in.progress = R"({"percent":50,"message":"half"})";
    in.error = lc::failure_problem("", "boom", in.id);
    auto s = lc::apply(in, lc::started{t0 + 9});
    BOOST_TEST(s.op.state == status::running);
    BOOST_TEST(s.op.attempt == 2);
    BOOST_TEST(s.op.started_at.value() == t0 + 9);
    BOOST_TEST(!s.op.progress);
    BOOST_TEST(!s.op.error);
    BOOST_TEST(types_of(s) == types{"running"}, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(a_start_stamped_by_a_clock_that_lags_is_not_before_the_creation) {
    auto s = lc::apply(op_in(status::pending), lc::started{t0 - 2});
    BOOST_TEST(s.op.state == status::running);
    BOOST_TEST(s.op.started_at.value() == t0);
}

BOOST_AUTO_TEST_CASE(progress_is_clamped_and_escaped_in_the_row_and_the_event) {
    auto s = lc::apply(op_in(status::running, 1), lc::progressed{150, "a \"quoted\"\nline"});
    BOOST_TEST(static_cast<bool>(s));
    BOOST_TEST(s.op.state == status::running);
    auto p = json::parse(s.op.progress.value()).as_object();
    BOOST_TEST(p.at("percent") == 100);
    BOOST_TEST(p.at("message") == "a \"quoted\"\nline");
    BOOST_TEST(types_of(s) == types{"progress"}, boost::test_tools::per_element());
    auto d = data_of(s.events[0]);
    BOOST_TEST(d.at("id").as_string() == s.op.id);
    BOOST_TEST(d.at("percent") == 100);
    BOOST_TEST(d.at("message") == "a \"quoted\"\nline");
    BOOST_TEST(lc::apply(op_in(status::running, 1), lc::progressed{-3, ""})
                   .op.progress.value()
                   .starts_with(R"({"percent":0,)"));
}

BOOST_AUTO_TEST_CASE(a_success_finishes_and_keeps_the_last_progress) {
    auto in = op_in(status::running, 1);
    in.progress = R"({"percent":90,"message":"m"})";
    auto s = lc::apply(in, lc::succeeded{t0 + 20});
    BOOST_TEST(s.op.state == status::succeeded);
    BOOST_TEST(s.op.finished_at.value() == t0 + 20);
    BOOST_TEST(!s.op.error);
    BOOST_TEST((s.op.progress == in.progress));
    BOOST_TEST(types_of(s) == types{"completed"}, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(a_failure_with_attempts_left_is_pending_again_after_the_delay) {
    auto in = op_in(status::running, 1);
    in.progress = R"({"percent":10,"message":"m"})";
    auto s = lc::apply(in, lc::failed{t0 + 30, "/problems/upstream", "bad gateway", true, 1500});
    BOOST_TEST(s.op.state == status::pending);
    BOOST_TEST(s.op.run_after == t0 + 30 + 1500);
    BOOST_TEST(!s.op.finished_at);
    BOOST_TEST(!s.op.progress);
    auto e = json::parse(s.op.error.value()).as_object();
    BOOST_TEST(e.at("type") == "/problems/upstream");
    BOOST_TEST(e.at("title") == "Attempt failed");
    BOOST_TEST(e.at("status") == 500);
    BOOST_TEST(e.at("detail") == "bad gateway");
    BOOST_TEST(e.at("instance").as_string() == "/operations/" + s.op.id);
    BOOST_TEST(types_of(s) == types{"pending"}, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(a_failure_without_attempts_left_or_not_retryable_fails) {
    auto last = lc::apply(op_in(status::running, 3, 3), lc::failed{t0 + 40, "", "boom"});
    BOOST_TEST(last.op.state == status::failed);
    BOOST_TEST(last.op.finished_at.value() == t0 + 40);
    BOOST_TEST(json::parse(last.op.error.value()).at("type") == "/problems/job-failed");
    BOOST_TEST(types_of(last) == types{"failed"}, boost::test_tools::per_element());

    auto fatal = lc::apply(op_in(status::running, 1, 3),
                           lc::failed{t0 + 41, "/problems/unknown-kind", "no such kind", false});
    BOOST_TEST(fatal.op.state == status::failed);
    BOOST_TEST(types_of(fatal) == types{"failed"}, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(a_timeout_is_a_retryable_failure_with_its_own_problem) {
    auto again = lc::apply(op_in(status::running, 1), lc::timed_out{t0 + 50, 200});
    BOOST_TEST(again.op.state == status::pending);
    BOOST_TEST(again.op.run_after == t0 + 250);
    auto e = json::parse(again.op.error.value()).as_object();
    BOOST_TEST(e.at("type") == "/problems/timeout");
    BOOST_TEST(e.at("title") == "Attempt timed out");
    BOOST_TEST(e.at("status") == 504);
    BOOST_TEST(e.at("detail") == "the attempt did not finish within timeout_s (2.5 s)");

    auto last = lc::apply(op_in(status::running, 3), lc::timed_out{t0 + 51});
    BOOST_TEST(last.op.state == status::failed);
    BOOST_TEST(types_of(last) == types{"failed"}, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(a_cancel_request_marks_active_operations_only) {
    for (auto st : {status::pending, status::running}) {
        auto s = lc::apply(op_in(st, st == status::running), lc::cancel_requested{});
        BOOST_TEST(static_cast<bool>(s));
        BOOST_TEST(s.op.cancel_requested);
        BOOST_TEST(s.op.state == st);
        BOOST_TEST(s.events.empty());
    }
}

BOOST_AUTO_TEST_CASE(pending_and_running_operations_are_canceled_with_the_canceled_problem) {
    for (auto st : {status::pending, status::running}) {
        auto s = lc::apply(op_in(st, st == status::running), lc::canceled{t0 + 60});
        BOOST_TEST(s.op.state == status::canceled);
        BOOST_TEST(s.op.finished_at.value() == t0 + 60);
        BOOST_TEST(s.op.error.value() == core::canceled_problem(s.op.id));
        BOOST_TEST(types_of(s) == types{"canceled"}, boost::test_tools::per_element());
        BOOST_TEST(data_of(s.events[0]).at("status") == "canceled");
    }
}

BOOST_AUTO_TEST_CASE(an_abandoned_attempt_runs_again_at_once_or_fails_when_it_was_the_last) {
    auto in = op_in(status::running, 1);
    in.progress = R"({"percent":10,"message":"m"})";
    auto again = lc::apply(in, lc::abandoned{t0 + 70});
    BOOST_TEST(again.op.state == status::pending);
    BOOST_TEST(again.op.attempt == 1);  // spent
    BOOST_TEST(again.op.run_after == t0 + 70);
    BOOST_TEST(!again.op.progress);
    BOOST_TEST(json::parse(again.op.error.value()).at("type") == "/problems/abandoned");
    BOOST_TEST(types_of(again) == types{"pending"}, boost::test_tools::per_element());

    auto last = lc::apply(op_in(status::running, 3), lc::abandoned{t0 + 71});
    BOOST_TEST(last.op.state == status::failed);
    BOOST_TEST(last.op.finished_at.value() == t0 + 71);
    BOOST_TEST(types_of(last) == types{"failed"}, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(a_handed_back_attempt_is_not_spent) {
    auto first = op_in(status::running, 1);
    first.progress = R"({"percent":10,"message":"m"})";
    first.run_after = t0 + 3;
    auto s = lc::apply(first, lc::handed_back{});
    BOOST_TEST(s.op.state == status::pending);
    BOOST_TEST(s.op.attempt == 0);
    BOOST_TEST(!s.op.started_at);  // as if it never began
    BOOST_TEST(!s.op.progress);
    BOOST_TEST(!s.op.error);
    BOOST_TEST(s.op.run_after == 0);
    BOOST_TEST(types_of(s) == types{"pending"}, boost::test_tools::per_element());

    auto second = lc::apply(op_in(status::running, 2), lc::handed_back{});
    BOOST_TEST(second.op.attempt == 1);
    BOOST_TEST(second.op.started_at.has_value());
}

// Every change applied to every state it does not apply to: refused, with the operation and
// no event returned unchanged.
BOOST_AUTO_TEST_CASE(every_change_is_refused_where_it_does_not_apply) {
    struct expectation {
        lc::change change;
        status from;
        int attempt;
        lc::refusal why;
    };
    const std::vector<expectation> refused = {
        {lc::submitted{t0}, status::pending, 1, lc::refusal::not_new},
        {lc::submitted{t0}, status::running, 1, lc::refusal::not_new},
        {lc::submitted{t0}, status::succeeded, 1, lc::refusal::not_new},
        {lc::started{t0}, status::running, 1, lc::refusal::not_pending},
        {lc::progressed{1, ""}, status::pending, 0, lc::refusal::not_running},
        {lc::succeeded{t0}, status::pending, 0, lc::refusal::not_running},
        {lc::failed{t0}, status::pending, 1, lc::refusal::not_running},
        {lc::timed_out{t0}, status::pending, 1, lc::refusal::not_running},
        {lc::abandoned{t0}, status::pending, 1, lc::refusal::not_running},
        {lc::handed_back{}, status::pending, 1, lc::refusal::not_running},
    };
    std::vector<expectation> all = refused;
    // Nothing changes an operation that has ended.
    const std::vector<lc::change> every = {
        lc::started{t0},  lc::progressed{1, ""}, lc::succeeded{t0},
        lc::failed{t0},   lc::timed_out{t0},     lc::cancel_requested{},
        lc::canceled{t0}, lc::abandoned{t0},     lc::handed_back{}};
    for (auto end : {status::succeeded, status::failed, status::canceled})
        for (const auto& c : every) all.push_back({c, end, 1, lc::refusal::finished});

    for (const auto& x : all) {
        const auto in = op_in(x.from, x.attempt);
        auto s = lc::apply(in, x.change);
        BOOST_TEST_CONTEXT("change #" << x.change.index() << " from " << core::to_string(x.from)) {
            BOOST_TEST(!s);
            BOOST_TEST(lc::to_string(s.refused) == lc::to_string(x.why));
            BOOST_TEST(s.events.empty());
            BOOST_TEST(core::state_text(s.op) == core::state_text(in));
            BOOST_TEST(s.op.cancel_requested == in.cancel_requested);
        }
    }
}

BOOST_AUTO_TEST_CASE(a_job_reported_timeout_reads_as_the_servers_own) {
    auto e = json::parse(core::lifecycle::failure_problem("/problems/timeout", "upstream", "X"))
                 .as_object();
    BOOST_TEST(e.at("title") == "Attempt timed out");
    BOOST_TEST(e.at("status") == 504);
}

BOOST_AUTO_TEST_SUITE_END()
