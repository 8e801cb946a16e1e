// verify_jwt past the signature: the input is the payload (first byte even) or the header
// (odd) of a token that this target signs with the HS256 key, so that the header's and the
// claims' parsers see arbitrary JSON.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "keys.hpp"

namespace {
constexpr std::string_view header = R"({"alg":"HS256","kid":"h1","typ":"JWT"})";
constexpr std::string_view payload =
    R"({"iss":"https://login.example.com/","aud":"buzzer","tenant":"acme",)"
    R"("scope":"buzzer:write","exp":1800000600})";
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace buzzer;
    if (size == 0) return 0;
    const std::string_view json(reinterpret_cast<const char*>(data + 1), size - 1);
    const std::string token =
        data[0] % 2 == 0 ? fuzz::sign_hs256(header, json) : fuzz::sign_hs256(json, payload);
    fuzz::check(auth::verify_jwt(token, fuzz::keys(), fuzz::rules(), fuzz::now));
    fuzz::check(auth::verify_jwt(token, fuzz::single_key(), fuzz::rules(), fuzz::now));
    return 0;
}
