// The built-in kinds: sleep (progress each step), echo (result = input), fail (on purpose).
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>
#include <cmath>

#include "core/operation.hpp"
#include "jobs/kinds.hpp"

namespace buzzer::jobs {
namespace asio = boost::asio;
namespace json = boost::json;

namespace {

const json::object& object_or_empty(const json::value& v) {
    static const json::object empty;
    return v.is_object() ? v.get_object() : empty;
}

void require_object_or_null(const json::value& v) {
    if (!v.is_null() && !v.is_object()) throw invalid_input("input must be an object");
}

// A number field within [lo, hi]; `integer` also requires a whole number.
std::optional<double> number_field(const json::object& o, std::string_view name, double lo,
                                   double hi, bool integer) {
    auto it = o.find(name);
    if (it == o.end() || it->value().is_null()) return std::nullopt;
    const auto& v = it->value();
    if (!v.is_number()) throw invalid_input("input." + std::string(name) + " must be a number");
    double d = v.to_number<double>();
    if (integer && std::floor(d) != d)
        throw invalid_input("input." + std::string(name) + " must be an integer");
    if (!(d >= lo && d <= hi))
        throw invalid_input("input." + std::string(name) + " must be between " +
                            core::number_text(lo) + " and " + core::number_text(hi));
    return d;
}

std::optional<std::string> string_field(const json::object& o, std::string_view name) {
    auto it = o.find(name);
    if (it == o.end() || it->value().is_null()) return std::nullopt;
    if (!it->value().is_string())
        throw invalid_input("input." + std::string(name) + " must be a string");
    return std::string(it->value().get_string());
}

void check_sleep(const json::value& input) {
    require_object_or_null(input);
    const auto& o = object_or_empty(input);
    number_field(o, "seconds", 0, 3600, false);
    number_field(o, "steps", 1, 1000, true);
}

asio::awaitable<json::value> run_sleep(job& j) {
    const auto& o = object_or_empty(j.input());
    double seconds = number_field(o, "seconds", 0, 3600, false).value_or(1);
    int steps = static_cast<int>(number_field(o, "steps", 1, 1000, true).value_or(1));
    auto ex = co_await asio::this_coro::executor;
    asio::steady_timer timer(ex);
    auto start = std::chrono::steady_clock::now();
    for (int step = 1; step <= steps; ++step) {
        // Step deadlines are measured from the start, so steps do not drift.
        auto due = start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                               std::chrono::duration<double>(seconds * step / steps));
        timer.expires_at(due);
        co_await timer.async_wait(asio::use_awaitable);
        co_await j.progress(step * 100 / steps,
                            "step " + std::to_string(step) + " of " + std::to_string(steps));
    }
    json::object result;
    result["slept"] = core::json_number(seconds);
    co_return result;
}

asio::awaitable<json::value> run_echo(job& j) {
    // The stored text is the input's compact serialization: the result as it is, unparsed.
    j.set_result(std::string(j.input_text()), "application/json");
    co_return nullptr;
}

void check_fail(const json::value& input) {
    require_object_or_null(input);
    const auto& o = object_or_empty(input);
    string_field(o, "message");
    number_field(o, "fail_attempts", 0, 1e9, true);
}

asio::awaitable<json::value> run_fail(job& j) {
    const auto& o = object_or_empty(j.input());
    std::string message = string_field(o, "message").value_or("failed on purpose");
    auto fail_attempts = number_field(o, "fail_attempts", 0, 1e9, true);
    if (!fail_attempts || j.attempt() <= static_cast<int>(*fail_attempts)) throw job_error(message);
    json::object result;
    result["attempts"] = j.attempt();
    co_return result;
}

}  // namespace

void add_builtin_kinds(kind_registry& r) {
    kind_options sleep_defaults;
    sleep_defaults.timeout_s = 3660;
    r.add({"sleep", "builtin", sleep_defaults, run_sleep, check_sleep});
    r.add({"echo", "builtin", kind_options{}, run_echo, {}});
    r.add({"fail", "builtin", kind_options{}, run_fail, check_fail});
}

}  // namespace buzzer::jobs
