#include "core/operation.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

namespace buzzer::core {
namespace json = boost::json;

namespace {

constexpr std::string_view status_names[] = {"pending", "running", "succeeded", "failed",
                                             "canceled"};

json::value parse_or_null(const std::optional<std::string>& text) {
    if (!text) return nullptr;
    boost::system::error_code ec;
    auto v = json::parse(*text, ec);
    return ec ? json::value(nullptr) : v;
}

json::value time_or_null(const std::optional<millis>& t) {
    if (!t) return nullptr;
    return json::value(format_time(*t));
}

json::object link(std::string_view rel, std::string href, std::string_view action) {
    return {{"rel", rel}, {"href", std::move(href)}, {"action", action}};
}

}  // namespace

std::string_view to_string(status s) { return status_names[static_cast<int>(s)]; }

std::optional<status> parse_status(std::string_view s) {
    for (int i = 0; i < 5; ++i)
        if (status_names[i] == s) return static_cast<status>(i);
    return std::nullopt;
}

json::value json_number(double v) {
    if (v == static_cast<double>(static_cast<std::int64_t>(v)) && v > -9e15 && v < 9e15)
        return static_cast<std::int64_t>(v);
    return v;
}

json::object make_problem(std::string_view type, std::string_view title, int status,
                          std::string_view detail, std::string_view instance) {
    json::object p;
    p["type"] = type;
    p["title"] = title;
    p["status"] = status;
    p["detail"] = detail;
    p["instance"] = instance;
    return p;
}

std::string operation_problem(std::string_view type, std::string_view title, int status,
                              std::string_view detail, std::string_view id) {
    return json::serialize(
        make_problem(type, title, status, detail, "/operations/" + std::string(id)));
}

std::string canceled_problem(std::string_view id) {
    return operation_problem("/problems/canceled", "Operation canceled", 409,
                             "the operation was canceled on request", id);
}

json::object represent(const operation& op, std::string_view base_url) {
    json::object o;
    o.reserve(13);
    o["id"] = op.id;
    o["kind"] = op.kind;
    o["status"] = to_string(op.state);
    o["created_at"] = format_time(op.created_at);
    o["started_at"] = time_or_null(op.started_at);
    o["finished_at"] = time_or_null(op.finished_at);
    o["attempt"] = op.attempt;
    o["max_attempts"] = op.max_attempts;
    o["priority"] = op.priority;
    o["timeout_s"] = json_number(op.timeout_s);
    o["progress"] = parse_or_null(op.progress);
    o["error"] = parse_or_null(op.error);

    std::string base = std::string(base_url) + "/operations/" + op.id;
    json::array links;
    links.reserve(4);
    links.push_back(link("status_check", base + "/status", "GET"));
    links.push_back(link("status_stream", base + "/status", "EventSource"));
    if (!is_terminal(op.state)) links.push_back(link("cancel", base + "/cancel", "POST"));
    if (op.state == status::succeeded) links.push_back(link("result", base, "GET"));
    o["links"] = std::move(links);
    return o;
}

std::string represent_text(const operation& op, std::string_view base_url) {
    return json::serialize(represent(op, base_url));
}

}  // namespace buzzer::core
