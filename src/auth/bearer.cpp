#include "auth/bearer.hpp"

namespace buzzer::auth {
namespace {

bool token68_char(char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~' || c == '+' || c == '/';
}

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        char x = a[i], y = b[i];
        if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
        if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
        if (x != y) return false;
    }
    return true;
}

}  // namespace

bearer parse_authorization(std::string_view value) {
    // The field value's own surrounding white space is not part of it (RFC 9110 §5.5).
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
        value.remove_prefix(1);
    while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);

    constexpr std::string_view scheme = "bearer";
    if (value.size() <= scheme.size() || !iequals(value.substr(0, scheme.size()), scheme) ||
        value[scheme.size()] != ' ')
        return {bearer::malformed, {}};
    value.remove_prefix(scheme.size());
    while (!value.empty() && value.front() == ' ') value.remove_prefix(1);

    // token68: at least one character of its alphabet, then only `=` padding.
    std::size_t i = 0;
    while (i < value.size() && token68_char(value[i])) ++i;
    if (i == 0) return {bearer::malformed, {}};
    while (i < value.size() && value[i] == '=') ++i;
    if (i != value.size()) return {bearer::malformed, {}};
    return {bearer::token, value};
}

}  // namespace buzzer::auth
