#include "store/values.hpp"

#include <boost/json/parse.hpp>

#include "core/json_text.hpp"
#include "core/operation.hpp"

namespace buzzer::store {

std::string kinds_text(const std::vector<std::string>& kinds) {
    std::string out = "[";
    for (std::size_t i = 0; i < kinds.size(); ++i) {
        if (i) out += ',';
        core::append_json_string(out, kinds[i]);
    }
    out += ']';
    return out;
}

std::vector<std::string> parse_kinds(const std::string& text) {
    boost::system::error_code ec;
    auto v = boost::json::parse(text, ec);
    std::vector<std::string> out;
    if (ec || !v.is_array()) return out;
    for (const auto& k : v.get_array()) {
        if (!k.is_string()) return {};
        out.emplace_back(k.get_string());
    }
    return out;
}

bool same_request(const std::string& stored, const std::string& sent) {
    if (stored == sent) return true;
    return core::same_json(boost::json::parse(stored, {}, core::json_options()),
                           boost::json::parse(sent, {}, core::json_options()));
}

}  // namespace buzzer::store
