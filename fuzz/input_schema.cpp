// A kind's input check: the input is a schema and an input, both JSON, split at the first NUL
// byte. A schema either parses or is refused with std::invalid_argument; a parsed schema
// either accepts the input or refuses it with invalid_input.
#include <boost/json/parse.hpp>
#include <buzzer/server.hpp>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string_view>

#include "jobs/schema.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace buzzer;
    const std::string_view all(reinterpret_cast<const char*>(data), size);
    const auto nul = all.find('\0');
    const auto schema_text = all.substr(0, nul);
    const auto input_text =
        nul == std::string_view::npos ? std::string_view("null") : all.substr(nul + 1);
    boost::system::error_code ec;
    const auto schema = boost::json::parse(schema_text, ec);
    if (ec) return 0;
    const auto input = boost::json::parse(input_text, ec);
    if (ec) return 0;
    try {
        const auto checker = jobs::input_schema::parse(schema, "kinds.fuzz.input");
        try {
            checker.check(input);
        } catch (const invalid_input&) {
        }
    } catch (const std::invalid_argument&) {
    }
    return 0;
}
