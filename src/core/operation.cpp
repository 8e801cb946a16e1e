#include "core/operation.hpp"

#include <algorithm>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <charconv>
#include <cmath>
#include <vector>

namespace buzzer::core {
namespace json = boost::json;

namespace {

constexpr std::string_view status_names[] = {"pending", "running", "succeeded", "failed",
                                             "canceled"};

}  // namespace

std::string_view to_string(status s) { return status_names[static_cast<int>(s)]; }

std::optional<status> parse_status(std::string_view s) {
    for (int i = 0; i < 5; ++i)
        if (status_names[i] == s) return static_cast<status>(i);
    return std::nullopt;
}

json::value json_number(double v) {
    // In range before the conversion: converting a double out of int64's range is undefined.
    if (v > -9e15 && v < 9e15 && v == static_cast<double>(static_cast<std::int64_t>(v)))
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

namespace {

// Appends `text` as the inside of a JSON string, escaped as Boost.JSON escapes: the quote, the
// backslash and control characters; other bytes as they are.
void append_escaped(std::string& out, std::string_view text) {
    static constexpr char hex[] = "0123456789abcdef";
    std::size_t plain = 0;  // start of the run not yet appended
    for (std::size_t i = 0; i < text.size(); ++i) {
        const auto c = static_cast<unsigned char>(text[i]);
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        out.append(text.data() + plain, i - plain);
        plain = i + 1;
        switch (c) {
            case '"':
                out += "\\\"";
                break;
            case '\\':
                out += "\\\\";
                break;
            case '\b':
                out += "\\b";
                break;
            case '\f':
                out += "\\f";
                break;
            case '\n':
                out += "\\n";
                break;
            case '\r':
                out += "\\r";
                break;
            case '\t':
                out += "\\t";
                break;
            default:
                out += "\\u00";
                out += hex[c >> 4];
                out += hex[c & 15];
        }
    }
    out.append(text.data() + plain, text.size() - plain);
}

}  // namespace

void append_json_string(std::string& out, std::string_view text) {
    out += '"';
    append_escaped(out, text);
    out += '"';
}

std::string number_text(double v) {
    if (!std::isfinite(v)) return "null";
    if (auto whole = json_number(v); whole.is_int64()) return std::to_string(whole.get_int64());
    char buf[32];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
    return std::string(buf, end);
}

namespace {

void append_json(std::string& out, const json::value& v, bool sorted) {
    switch (v.kind()) {
        case json::kind::null:
            out += "null";
            break;
        case json::kind::bool_:
            out += v.get_bool() ? "true" : "false";
            break;
        case json::kind::int64:
            out += std::to_string(v.get_int64());
            break;
        case json::kind::uint64:
            out += std::to_string(v.get_uint64());
            break;
        case json::kind::double_:
            out += number_text(v.get_double());
            break;
        case json::kind::string:
            append_json_string(out, v.get_string());
            break;
        case json::kind::array: {
            out += '[';
            bool first = true;
            for (const auto& e : v.get_array()) {
                if (!first) out += ',';
                first = false;
                append_json(out, e, sorted);
            }
            out += ']';
            break;
        }
        case json::kind::object: {
            std::vector<const json::key_value_pair*> members;
            members.reserve(v.get_object().size());
            for (const auto& m : v.get_object()) members.push_back(&m);
            if (sorted)
                std::sort(members.begin(), members.end(),
                          [](auto* a, auto* b) { return a->key() < b->key(); });
            out += '{';
            for (std::size_t i = 0; i < members.size(); ++i) {
                if (i) out += ',';
                append_json_string(out, members[i]->key());
                out += ':';
                append_json(out, members[i]->value(), sorted);
            }
            out += '}';
            break;
        }
    }
}

}  // namespace

std::string to_json(const json::value& v) {
    std::string out;
    append_json(out, v, false);
    return out;
}

bool same_json(const json::value& a, const json::value& b) {
    if (a.is_number() && b.is_number()) {
        if (a.is_double() || b.is_double()) return a.to_number<double>() == b.to_number<double>();
        return a == b;  // int64 and uint64 compare by value
    }
    if (a.kind() != b.kind()) return false;
    if (a.is_array()) {
        const auto &x = a.get_array(), &y = b.get_array();
        if (x.size() != y.size()) return false;
        for (std::size_t i = 0; i < x.size(); ++i)
            if (!same_json(x[i], y[i])) return false;
        return true;
    }
    if (a.is_object()) {
        const auto &x = a.get_object(), &y = b.get_object();
        if (x.size() != y.size()) return false;
        for (const auto& m : x) {
            auto it = y.find(m.key());
            if (it == y.end() || !same_json(m.value(), it->value())) return false;
        }
        return true;
    }
    return a == b;
}

std::string canonical_json(const json::value& v) {
    std::string out;
    append_json(out, v, true);
    return out;
}

namespace {

void append_time_or_null(std::string& out, const std::optional<millis>& t) {
    if (!t) {
        out += "null";
        return;
    }
    out += '"';
    append_time(out, *t);
    out += '"';
}

// A link to `base_url` + "/operations/" + `id` + `suffix`.
void append_link(std::string& out, std::string_view rel, std::string_view base_url,
                 std::string_view id, std::string_view suffix, std::string_view action,
                 bool first = false) {
    if (!first) out += ',';
    out += R"({"rel":")";
    out += rel;
    out += R"(","href":")";
    append_escaped(out, base_url);
    out += "/operations/";
    append_escaped(out, id);
    out += suffix;
    out += R"(","action":")";
    out += action;
    out += "\"}";
}

}  // namespace

// Written out directly rather than through json::object: this runs for every state change
// (the 202 and the pending, running and outcome events), some of them on the store's writer
// thread. `progress` and `error` are stored as JSON text that this program wrote.
std::string state_text(const operation& op) {
    std::string out;
    out.reserve(320 + op.kind.size() + (op.progress ? op.progress->size() : 0) +
                (op.error ? op.error->size() : 0));
    out += R"({"id":)";
    append_json_string(out, op.id);
    out += R"(,"kind":)";
    append_json_string(out, op.kind);
    out += R"(,"status":")";
    out += to_string(op.state);
    out += R"(","created_at":)";
    append_time_or_null(out, op.created_at);
    out += R"(,"started_at":)";
    append_time_or_null(out, op.started_at);
    out += R"(,"finished_at":)";
    append_time_or_null(out, op.finished_at);
    out += R"(,"attempt":)";
    out += std::to_string(op.attempt);
    out += R"(,"max_attempts":)";
    out += std::to_string(op.max_attempts);
    out += R"(,"priority":)";
    out += std::to_string(op.priority);
    out += R"(,"timeout_s":)";
    out += number_text(op.timeout_s);
    out += R"(,"progress":)";
    out += op.progress && !op.progress->empty() ? std::string_view(*op.progress) : "null";
    out += R"(,"error":)";
    out += op.error && !op.error->empty() ? std::string_view(*op.error) : "null";
    out += '}';
    return out;
}

void append_links(std::string& text, std::string_view id, status s, std::string_view base_url) {
    if (!text.empty() && text.back() == '}') text.pop_back();
    text.reserve(text.size() + 300 + 4 * (base_url.size() + id.size()));
    text += R"(,"links":[)";
    append_link(text, "status_check", base_url, id, "/status", "GET", true);
    append_link(text, "status_stream", base_url, id, "/status", "EventSource");
    if (!is_terminal(s)) append_link(text, "cancel", base_url, id, "/cancel", "POST");
    if (s == status::succeeded) append_link(text, "result", base_url, id, "", "GET");
    text += "]}";
}

std::string represent_text(const operation& op, std::string_view base_url) {
    std::string out = state_text(op);
    append_links(out, op.id, op.state, base_url);
    return out;
}

}  // namespace buzzer::core
