#include "core/ulid.hpp"

#include <sys/random.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <mutex>
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

// The newest ULID made by this process: its time and its 80 random bits (high 16, low 64).
struct last_ulid {
    std::mutex mutex;
    std::uint64_t time = 0;
    std::uint16_t high = 0;
    std::uint64_t low = 0;
};

last_ulid& newest() {
    static last_ulid l;
    return l;
}

// Random bytes drawn from the OS CSPRNG 4 KiB at a time: one system call per ~400 ids.
class random_pool {
  public:
    void take(std::uint8_t* out, std::size_t n) {
        std::lock_guard lock(mutex_);
        if (left_ < n) {
            fill_random(buffer_.data(), buffer_.size());
            left_ = buffer_.size();
        }
        std::memcpy(out, buffer_.data() + buffer_.size() - left_, n);
        // Each byte is handed out once.
        std::memset(buffer_.data() + buffer_.size() - left_, 0, n);
        left_ -= n;
    }

  private:
    std::mutex mutex_;
    std::array<std::uint8_t, 4096> buffer_{};
    std::size_t left_ = 0;
};

random_pool& pool() {
    static random_pool p;
    return p;
}

std::string make_ulid(millis t) {
    std::array<std::uint8_t, 16> bytes{};
    pool().take(bytes.data() + 6, 10);
    auto ts = static_cast<std::uint64_t>(std::max<millis>(t, 0));
    std::uint16_t high = static_cast<std::uint16_t>(bytes[6] << 8 | bytes[7]);
    std::uint64_t low = 0;
    for (int i = 8; i < 16; ++i) low = low << 8 | bytes[static_cast<std::size_t>(i)];
    {
        // Ids of one process made in the same millisecond increase strictly: the next is the
        // previous one plus a random step of 1 to 2^48, so it still cannot be guessed from its
        // neighbour.
        auto& last = newest();
        std::lock_guard lock(last.mutex);
        if (ts == last.time) {
            const std::uint64_t step = (low >> 16) + 1;
            high = last.high;
            low = last.low + step;
            if (low < last.low && ++high == 0) ++ts;  // the random part overflowed: next ms
        }
        last.time = ts;
        last.high = high;
        last.low = low;
    }
    // 128 bits: 48 of time, 80 of randomness, written 5 bits at a time from the top.
    for (int i = 5; i >= 0; --i) {
        bytes[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(ts & 0xff);
        ts >>= 8;
    }
    bytes[6] = static_cast<std::uint8_t>(high >> 8);
    bytes[7] = static_cast<std::uint8_t>(high & 0xff);
    for (int i = 15; i >= 8; --i) {
        bytes[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(low & 0xff);
        low >>= 8;
    }

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
