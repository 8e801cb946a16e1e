// parse_authorization on arbitrary header values.
#include "auth/bearer.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace buzzer;
    const std::string_view value(reinterpret_cast<const char*>(data), size);
    const auto b = auth::parse_authorization(value);
    if (b.kind == auth::bearer::token) {
        // The credential is a non-empty view into the value, at its end (before white space).
        if (b.credential.empty() || b.credential.data() < value.data() ||
            b.credential.data() + b.credential.size() > value.data() + value.size())
            std::abort();
        if (b.credential.find_first_of(" \t,;\"") != std::string_view::npos) std::abort();
    } else if (!b.credential.empty()) {
        std::abort();
    }
    return 0;
}
