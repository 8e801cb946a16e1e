#include "jobs/schema.hpp"

#include <boost/json.hpp>
#include <buzzer/server.hpp>
#include <cmath>
#include <stdexcept>

#include "core/operation.hpp"

namespace buzzer::jobs {
namespace json = boost::json;

namespace {

constexpr std::string_view type_names[] = {"object",  "array",   "string", "number",
                                           "integer", "boolean", "null"};

bool known_type(std::string_view t) {
    for (auto n : type_names)
        if (n == t) return true;
    return false;
}

bool has_type(const json::value& v, std::string_view t) {
    if (t == "object") return v.is_object();
    if (t == "array") return v.is_array();
    if (t == "string") return v.is_string();
    if (t == "number") return v.is_number();
    if (t == "integer") {
        if (v.is_int64() || v.is_uint64()) return true;
        return v.is_double() && std::floor(v.get_double()) == v.get_double();
    }
    if (t == "boolean") return v.is_bool();
    return v.is_null();
}

[[noreturn]] void bad(const std::string& where, const std::string& what) {
    throw std::invalid_argument(where + ": " + what);
}

void validate_schema(const json::value& s, const std::string& where) {
    if (!s.is_object()) bad(where, "a schema must be an object");
    for (const auto& kv : s.get_object()) {
        std::string key(kv.key());
        std::string at = where + "." + key;
        const auto& v = kv.value();
        if (key == "type") {
            if (v.is_string()) {
                if (!known_type(v.get_string()))
                    bad(at, "unknown type " + std::string(v.get_string()));
            } else if (v.is_array()) {
                for (const auto& t : v.get_array())
                    if (!t.is_string() || !known_type(t.get_string()))
                        bad(at, "unknown type in list");
            } else {
                bad(at, "must be a type name or a list of them");
            }
        } else if (key == "required") {
            if (!v.is_array()) bad(at, "must be a list of property names");
            for (const auto& n : v.get_array())
                if (!n.is_string()) bad(at, "must be a list of property names");
        } else if (key == "properties") {
            if (!v.is_object()) bad(at, "must be an object of schemas");
            for (const auto& p : v.get_object())
                validate_schema(p.value(), at + "." + std::string(p.key()));
        } else if (key == "items") {
            validate_schema(v, at);
        } else if (key == "enum") {
            if (!v.is_array() || v.get_array().empty()) bad(at, "must be a non-empty list");
        } else if (key == "minimum" || key == "maximum") {
            if (!v.is_number()) bad(at, "must be a number");
        } else if (key == "maxLength") {
            if (!has_type(v, "integer") || v.to_number<double>() < 0)
                bad(at, "must be a non-negative integer");
        } else if (key == "description" || key == "title" || key == "default") {
            // Documentation only.
        } else {
            bad(at,
                "unsupported schema keyword (supported: type, required, properties, enum, "
                "minimum, maximum, maxLength, items)");
        }
    }
}

// UTF-8 code points, as JSON Schema counts string length.
std::size_t code_points(std::string_view s) {
    std::size_t n = 0;
    for (unsigned char c : s)
        if ((c & 0xC0) != 0x80) ++n;
    return n;
}

void check_value(const json::object& s, const json::value& v, const std::string& path) {
    if (auto it = s.find("type"); it != s.end()) {
        bool ok = false;
        std::string expected;
        if (it->value().is_string()) {
            ok = has_type(v, it->value().get_string());
            expected = it->value().get_string();
        } else {
            for (const auto& t : it->value().get_array()) {
                ok = ok || has_type(v, t.get_string());
                expected += (expected.empty() ? "" : " or ") + std::string(t.get_string());
            }
        }
        if (!ok)
            throw invalid_input(
                path + " must be " +
                (expected == "integer" || expected == "object" || expected == "array" ? "an "
                                                                                      : "a ") +
                expected);
    }
    if (auto it = s.find("enum"); it != s.end()) {
        bool found = false;
        // Numbers by value: 1 and 1.0 are the same number.
        for (const auto& e : it->value().get_array()) found = found || core::same_json(e, v);
        if (!found) throw invalid_input(path + " must be one of " + core::to_json(it->value()));
    }
    if (v.is_number()) {
        double d = v.to_number<double>();
        if (auto it = s.find("minimum"); it != s.end() && d < it->value().to_number<double>())
            throw invalid_input(path + " must be at least " + core::to_json(it->value()));
        if (auto it = s.find("maximum"); it != s.end() && d > it->value().to_number<double>())
            throw invalid_input(path + " must be at most " + core::to_json(it->value()));
    }
    if (v.is_string()) {
        // Compared as doubles: a limit may be any integer, 1e30 too.
        if (auto it = s.find("maxLength");
            it != s.end() &&
            static_cast<double>(code_points(v.get_string())) > it->value().to_number<double>())
            throw invalid_input(path + " must be at most " + core::to_json(it->value()) +
                                " characters long");
    }
    // Unlike JSON Schema, which lets anything but an object pass `required`, an input that is
    // missing or not an object lacks the members it requires: that is what people mean by it.
    if (auto it = s.find("required");
        it != s.end() && !v.is_object() && !it->value().get_array().empty()) {
        if (v.is_null())
            throw invalid_input(path + "." + std::string(it->value().get_array()[0].get_string()) +
                                " is required");
        throw invalid_input(path + " must be an object");
    }
    if (v.is_object()) {
        const auto& o = v.get_object();
        if (auto it = s.find("required"); it != s.end())
            for (const auto& name : it->value().get_array())
                if (!o.contains(name.get_string()))
                    throw invalid_input(path + "." + std::string(name.get_string()) +
                                        " is required");
        if (auto it = s.find("properties"); it != s.end())
            for (const auto& p : it->value().get_object())
                if (auto m = o.find(p.key()); m != o.end())
                    check_value(p.value().get_object(), m->value(),
                                path + "." + std::string(p.key()));
    }
    if (v.is_array()) {
        if (auto it = s.find("items"); it != s.end()) {
            std::size_t i = 0;
            for (const auto& e : v.get_array())
                check_value(it->value().get_object(), e, path + "[" + std::to_string(i++) + "]");
        }
    }
}

}  // namespace

input_schema input_schema::parse(const json::value& schema, const std::string& where) {
    validate_schema(schema, where);
    input_schema s;
    s.schema_ = schema;
    return s;
}

void input_schema::check(const json::value& input) const {
    check_value(schema_.get_object(), input, "input");
}

}  // namespace buzzer::jobs
