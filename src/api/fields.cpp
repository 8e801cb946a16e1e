#include "api/fields.hpp"

#include <algorithm>
#include <boost/url/parse_query.hpp>
#include <charconv>
#include <cstdio>
#include <limits>

#include "core/ulid.hpp"

namespace buzzer::api {
using http::http_error;

query_params parse_query(std::string_view query) {
    query_params out;
    if (query.empty()) return out;
    // Boost.URL 1.81's compiled parse_query measures the text it checked again with strlen:
    // it reads up to a NUL. A copy ends in one exactly where the query does (a query with a
    // NUL in it does not parse, and is refused before that).
    const std::string terminated(query);
    auto parsed = boost::urls::parse_query(terminated);
    if (!parsed) throw http_error{400, "invalid-query", "the query string does not parse"};
    // Decoded as forms are: percent escapes, and '+' for a space (what URLSearchParams sends).
    const boost::urls::encoding_opts form(true);
    for (auto p : *parsed)
        out.emplace_back(p.key.decode(form), p.has_value ? p.value.decode(form) : std::string());
    return out;
}

std::optional<long long> parse_integer(std::string_view text) {
    long long v = 0;
    auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc{} || p != text.data() + text.size() || text.empty()) return std::nullopt;
    return v;
}

std::optional<int> parse_wait(std::string_view text) {
    const bool negative = text.starts_with('-');
    auto digits = text.substr(negative ? 1 : 0);
    if (digits.empty() ||
        !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return std::nullopt;
    if (negative) return 0;
    while (digits.size() > 1 && digits.front() == '0') digits.remove_prefix(1);
    if (digits.size() > 2) return 60;
    return std::min(60, std::stoi(std::string(digits)));
}

int wait_parameter(const query_params& query) {
    int wait = 0;
    for (const auto& [k, v] : query) {
        if (k != "wait") continue;
        auto n = parse_wait(v);
        if (!n) throw http_error{400, "invalid-query", "wait must be an integer number of seconds"};
        wait = *n;
    }
    return wait;
}

std::string parse_idempotency_key(std::string_view raw) {
    std::string_view v = raw;
    std::string key;
    if (v.size() >= 2 && v.front() == '"' && v.back() == '"') {
        v = v.substr(1, v.size() - 2);
        for (std::size_t i = 0; i < v.size(); ++i) {
            if (v[i] == '\\') {
                if (i + 1 >= v.size() || (v[i + 1] != '"' && v[i + 1] != '\\')) {
                    key.clear();
                    break;
                }
                ++i;
            }
            key += v[i];
        }
    } else {
        key = std::string(v);
    }
    bool ok = !key.empty() && key.size() <= 255 &&
              std::all_of(key.begin(), key.end(), [](char c) { return c > 0x20 && c < 0x7f; });
    if (!ok)
        throw http_error{400, "invalid-idempotency-key",
                         "Idempotency-Key must be 1 to 255 visible ASCII characters"};
    return key;
}

std::optional<int> preferred_wait(const std::vector<http::field>& headers) {
    for (const auto& f : headers) {
        if (!http::iequals(f.name, "prefer")) continue;
        std::string_view v = f.value;
        while (!v.empty()) {
            auto comma = v.find(',');
            auto item = v.substr(0, comma);
            v = comma == std::string_view::npos ? std::string_view() : v.substr(comma + 1);
            item = http::trim_ows(item.substr(0, item.find(';')));
            if (item.size() > 5 && http::iequals(item.substr(0, 5), "wait=")) {
                auto value = item.substr(5);
                if (value.size() >= 2 && value.front() == '"' && value.back() == '"')
                    value = value.substr(1, value.size() - 2);
                if (auto n = parse_wait(value)) return n;
            }
        }
    }
    return std::nullopt;
}

std::int64_t resume_after(std::optional<std::string_view> last_event_id,
                          const query_params& query) {
    std::optional<std::string_view> raw = last_event_id;
    if (!raw)
        for (const auto& [k, v] : query)
            if (k == "last_event_id") raw = v;
    if (!raw) return 0;
    auto n = parse_integer(*raw);
    if (!n && !raw->empty() && raw->find_first_not_of("0123456789") == std::string_view::npos)
        return std::numeric_limits<std::int64_t>::max();
    return n && *n >= 0 ? *n : 0;
}

std::vector<std::string> stream_operations(const query_params& query) {
    std::vector<std::string> ids;
    std::size_t named = 0;  // `operation` parameters, repeated ids too
    for (const auto& [k, v] : query) {
        if (k != "operation") continue;
        if (++named > 100)
            throw http_error{400, "invalid-query", "at most 100 operations per stream"};
        if (std::find(ids.begin(), ids.end(), v) == ids.end()) ids.push_back(v);
    }
    if (ids.empty()) throw http_error{400, "invalid-query", "name at least one operation"};
    return ids;
}

namespace {

// The q of each media range of an Accept header that names text/event-stream, and the q
// that the same header gives JSON (its most specific range: application/json, application/*
// or */*; -1 when none matches).
struct accept_weights {
    double event_stream = -1;
    double json = -1;
};

accept_weights weigh(std::string_view accept) {
    accept_weights w;
    int json_specificity = -1;
    while (!accept.empty()) {
        auto comma = accept.find(',');
        auto range = accept.substr(0, comma);
        accept = comma == std::string_view::npos ? std::string_view() : accept.substr(comma + 1);
        auto semi = range.find(';');
        auto type = http::trim_ows(range.substr(0, semi));
        double q = 1;
        for (auto params = semi == std::string_view::npos ? std::string_view()
                                                          : range.substr(semi + 1);
             !params.empty();) {
            auto next = params.find(';');
            auto param = http::trim_ows(params.substr(0, next));
            params = next == std::string_view::npos ? std::string_view() : params.substr(next + 1);
            if (param.size() > 2 && (param[0] == 'q' || param[0] == 'Q') && param[1] == '=') {
                auto text = param.substr(2);
                double v = 0;
                auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
                q = ec == std::errc{} && end == text.data() + text.size() && v >= 0 && v <= 1 ? v
                                                                                              : 0;
            }
        }
        int specificity = -1;
        if (http::iequals(type, "text/event-stream")) w.event_stream = std::max(w.event_stream, q);
        if (http::iequals(type, "application/json")) specificity = 2;
        if (http::iequals(type, "application/*")) specificity = 1;
        if (type == "*/*") specificity = 0;
        if (specificity > json_specificity) {
            json_specificity = specificity;
            w.json = q;
        }
    }
    return w;
}

// A query value with everything but the unreserved characters percent-encoded.
void append_encoded(std::string& out, std::string_view value) {
    for (unsigned char c : value) {
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~') {
            out += static_cast<char>(c);
        } else {
            char buf[4];
            std::snprintf(buf, sizeof buf, "%%%02X", c);
            out += buf;
        }
    }
}

}  // namespace

bool accepts_event_stream(std::string_view accept) {
    auto w = weigh(accept);
    return w.event_stream > 0 && w.event_stream >= w.json;
}

list_filter parse_list_filter(const query_params& query) {
    list_filter f;
    for (const auto& [k, v] : query) {
        if (k == "status") {
            auto s = core::parse_status(v);
            if (!s) throw http_error{400, "invalid-query", "unknown status " + v};
            f.statuses.push_back(*s);
        } else if (k == "kind") {
            f.kind = v;
        } else if (k == "limit") {
            auto n = parse_integer(v);
            if (!n || *n < 1 || *n > 500)
                throw http_error{400, "invalid-query", "limit must be an integer from 1 to 500"};
            f.limit = static_cast<int>(*n);
        } else if (k == "before") {
            if (!core::is_ulid(v))
                throw http_error{400, "invalid-query", "before must be an operation id"};
            f.before = v;
        }
    }
    return f;
}

std::string next_page_query(const list_filter& filter, std::string_view last_id) {
    std::string q;
    for (auto s : filter.statuses) {
        q += "status=";
        q += core::to_string(s);
        q += '&';
    }
    if (filter.kind) {
        q += "kind=";
        append_encoded(q, *filter.kind);
        q += '&';
    }
    q += "limit=" + std::to_string(filter.limit) + "&before=";
    append_encoded(q, last_id);
    return q;
}

}  // namespace buzzer::api
