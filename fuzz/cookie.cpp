// find_cookie and open_session: the input is a Cookie header (first byte even), or the
// payload of a session that this target seals with the right MAC (odd), so that the session
// reader sees arbitrary JSON.
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>

#include "auth/base64url.hpp"
#include "auth/session.hpp"

namespace {

const std::string secret(32, 's');
constexpr buzzer::core::millis now = 1'800'000'000'000;

std::string seal_raw(std::string_view payload) {
    std::string value = buzzer::auth::base64url_encode(payload);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
         reinterpret_cast<const unsigned char*>(value.data()), value.size(), mac, &len);
    return value + "." +
           buzzer::auth::base64url_encode(std::string_view(reinterpret_cast<char*>(mac), len));
}

void check(const std::optional<buzzer::auth::session>& s) {
    if (s && (s->tenant.empty() || s->expires_at <= now)) std::abort();
    // What opens must seal again and open to the same.
    if (s) {
        std::string sealed;
        try {
            sealed = buzzer::auth::seal_session(*s, secret);
        } catch (const std::invalid_argument&) {
            return;  // written out again it may exceed the size limit, e.g. with escapes undone
        }
        const auto again = buzzer::auth::open_session(sealed, secret, now);
        if (!again || again->tenant != s->tenant || again->role != s->role ||
            again->kinds != s->kinds || again->credential != s->credential ||
            again->expires_at != s->expires_at)
            std::abort();
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace buzzer;
    if (size == 0) return 0;
    const std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);
    if (data[0] % 2 == 0) {
        const auto value = auth::find_cookie(input, "buzzer_session");
        if (value) {
            if (value->find_first_of(" \t;,\"\\") != std::string_view::npos) std::abort();
            check(auth::open_session(*value, secret, now));
        }
        check(auth::open_session(input, secret, now));
    } else {
        check(auth::open_session(seal_raw(input), secret, now));
    }
    return 0;
}
