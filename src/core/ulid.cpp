#include "core/ulid.hpp"

#include <sys/random.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <stdexcept>

namespace buzzer::core {
namespace {

constexpr char alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

int digit_value(char c) {
    for (int i = 0; i < 32; ++i)
        if (alphabet[i] == c) return i;
    return -1;
}

void fill_random(std::uint8_t* p, std::size_t n) {
    while (n > 0) {
        ssize_t got = getrandom(p, n, 0);
        if (got < 0) {
            if (errno == EINTR) continue;
            throw std::runtime_error("getrandom failed");
        }
        p += got;
        n -= static_cast<std::size_t>(got);
    }
}

}  // namespace

std::string make_ulid(millis t) {
    // 128 bits: 48 of time, 80 of randomness, written 5 bits at a time from the top.
    std::array<std::uint8_t, 16> bytes{};
    auto ts = static_cast<std::uint64_t>(t);
    for (int i = 5; i >= 0; --i) {
        bytes[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(ts & 0xff);
        ts >>= 8;
    }
    fill_random(bytes.data() + 6, 10);

    std::string out(26, '0');
    // The first character holds only the top 3 bits (26 * 5 = 130 = 2 + 128).
    for (int i = 0; i < 26; ++i) {
        int bit = i * 5 - 2;  // position of this character's first bit in the 128-bit value
        int v = 0;
        for (int b = 0; b < 5; ++b, ++bit) {
            v <<= 1;
            if (bit >= 0) v |= (bytes[static_cast<std::size_t>(bit / 8)] >> (7 - bit % 8)) & 1;
        }
        out[static_cast<std::size_t>(i)] = alphabet[v];
    }
    return out;
}

bool is_ulid(std::string_view s) {
    if (s.size() != 26) return false;
    if (s[0] < '0' || s[0] > '7') return false;
    for (char c : s)
        if (digit_value(c) < 0) return false;
    return true;
}

millis ulid_time(std::string_view s) {
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < 10; ++i)
        v = (v << 5) | static_cast<std::uint64_t>(digit_value(s[i]));
    return static_cast<millis>(v);
}

}  // namespace buzzer::core
