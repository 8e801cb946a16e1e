#include "core/ulid.hpp"

#include <algorithm>
#include <array>
#include <cstdint>
#include <mutex>

#include "core/random.hpp"

namespace buzzer::core {
namespace {

constexpr char alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

int digit_value(char c) {
    for (int i = 0; i < 32; ++i)
        if (alphabet[i] == c) return i;
    return -1;
}

// What make_ulid keeps between calls, under one lock: random bytes drawn from the OS CSPRNG
// 4 KiB at a time (one system call per ~400 ids, each byte handed out once), and the time and
// 80 random bits (high 16, low 64) of the newest id.
struct generator {
    std::mutex mutex;
    std::array<std::uint8_t, 4096> pool{};
    std::size_t left = 0;
    std::uint64_t time = 0;
    std::uint16_t high = 0;
    std::uint64_t low = 0;

    std::uint64_t take(std::size_t n) {
        if (left < n) {
            random_bytes(pool.data(), pool.size());
            left = pool.size();
        }
        std::uint64_t v = 0;
        for (std::uint8_t* p = pool.data() + pool.size() - left; n > 0; --n, --left, ++p) {
            v = v << 8 | *p;
            *p = 0;
        }
        return v;
    }
};

// 128 bits: 48 of time, 80 of randomness; 26 characters of 5 bits from the bottom up (the
// first one holds only the top 3 bits: 26 * 5 = 130).
std::string encode(std::uint64_t ts, std::uint16_t high, std::uint64_t low) {
    unsigned __int128 value = static_cast<unsigned __int128>(ts & 0xffffffffffffULL) << 80 |
                              static_cast<unsigned __int128>(high) << 64 | low;
    std::string out(26, '0');
    for (int i = 25; i >= 0; --i) {
        out[static_cast<std::size_t>(i)] = alphabet[static_cast<unsigned>(value & 31)];
        value >>= 5;
    }
    return out;
}

generator& state() {
    static generator g;
    return g;
}

}  // namespace

std::string make_ulid(millis t) {
    auto ts = static_cast<std::uint64_t>(std::max<millis>(t, 0));
    std::uint16_t high = 0;
    std::uint64_t low = 0;
    {
        auto& g = state();
        std::lock_guard lock(g.mutex);
        high = static_cast<std::uint16_t>(g.take(2));
        low = g.take(8);
        // Ids of one process made in the same millisecond increase strictly: the next is the
        // previous one plus a random step of 1 to 2^64, so that 64 fresh random bits separate
        // it from its neighbour. The 80 bits overflow after some 65,000 ids in one millisecond:
        // then the time moves on by one.
        // The first id of a millisecond starts in the lower half of the 80 bits (79 random bits)
        // so that the steps always have room for those 65,000: from the upper half, a few
        // thousand could overflow.
        if (ts == g.time) {
            const std::uint64_t step = std::max<std::uint64_t>(low, 1);
            low = g.low + step;
            high = static_cast<std::uint16_t>(g.high + (low < g.low ? 1 : 0));
            if (high < g.high) ++ts;
        } else {
            high &= 0x7fff;
        }
        g.time = ts;
        g.high = high;
        g.low = low;
    }
    return encode(ts, high, low);
}

std::string ulid_floor(millis t) {
    return encode(static_cast<std::uint64_t>(std::max<millis>(t, 0)), 0, 0);
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
