#include "core/json_text.hpp"

#include <boost/json/parse.hpp>
#include <cstring>

namespace buzzer::core {
namespace json = boost::json;

namespace {

// Where the JSON string starting at `i` (its opening quote) ends: just past its closing quote.
std::size_t skip_string(std::string_view text, std::size_t i) {
    for (++i; i < text.size() && text[i] != '"'; ++i)
        if (text[i] == '\\') ++i;
    return i + 1;
}

// Where the JSON value starting at `i` ends.
std::size_t skip_value(std::string_view text, std::size_t i) {
    if (i >= text.size()) return i;
    if (text[i] == '"') return skip_string(text, i);
    if (text[i] == '{' || text[i] == '[') {
        int depth = 0;
        while (i < text.size()) {
            char c = text[i];
            if (c == '"') {
                i = skip_string(text, i);
                continue;
            }
            if (c == '{' || c == '[') ++depth;
            if ((c == '}' || c == ']') && --depth == 0) return i + 1;
            ++i;
        }
        return i;
    }
    while (i < text.size() && !std::strchr(",}] \t\r\n", text[i])) ++i;
    return i;
}

}  // namespace

json::parse_options json_options() {
    json::parse_options o;
    o.max_depth = max_json_depth;
    return o;
}

std::optional<std::string_view> member_text(std::string_view object, std::string_view key) {
    auto ws = [&](std::size_t i) {
        while (i < object.size() && object[i] && std::strchr(" \t\r\n", object[i])) ++i;
        return i;
    };
    std::optional<std::string_view> found;
    std::size_t i = ws(0) + 1;  // past '{'
    for (;;) {
        i = ws(i);
        if (i >= object.size() || object[i] != '"') return found;
        const std::size_t key_end = skip_string(object, i);
        auto raw_key = object.substr(i, key_end - i);
        bool match = raw_key.find('\\') == std::string_view::npos
                         ? raw_key.substr(1, raw_key.size() - 2) == key
                         : json::parse(raw_key).as_string() == key;
        i = ws(ws(key_end) + 1);  // past ':'
        const std::size_t value_end = skip_value(object, i);
        if (match) found = object.substr(i, value_end - i);
        i = ws(value_end);
        if (i >= object.size() || object[i] != ',') return found;
        ++i;
    }
}

}  // namespace buzzer::core
