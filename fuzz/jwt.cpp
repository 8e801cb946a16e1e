// verify_jwt on arbitrary bytes as the token, against a key of each family and a single key.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "keys.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace buzzer;
    const std::string_view token(reinterpret_cast<const char*>(data), size);
    fuzz::check(auth::verify_jwt(token, fuzz::keys(), fuzz::rules(), fuzz::now));
    fuzz::check(auth::verify_jwt(token, fuzz::single_key(), fuzz::rules(), fuzz::now));
    return 0;
}
