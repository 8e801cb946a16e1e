// base64url: decoding arbitrary text, and the canonical round trips both ways.
#include "auth/base64url.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace buzzer;
    const std::string_view input(reinterpret_cast<const char*>(data), size);
    // Decoding is strict: what decodes is the one encoding of its bytes.
    if (const auto bytes = auth::base64url_decode(input)) {
        if (auth::base64url_encode(*bytes) != input) std::abort();
    }
    const auto text = auth::base64url_encode(input);
    const auto back = auth::base64url_decode(text);
    if (!back || *back != input) std::abort();
    return 0;
}
