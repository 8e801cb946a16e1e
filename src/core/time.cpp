#include "core/time.hpp"

#include <chrono>
#include <cstdio>

namespace buzzer::core {

millis now_ms() {
    using namespace std::chrono;
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

namespace {

// Days since 1970-01-01 to a proleptic Gregorian date (the civil-from-days conversion of
// era, day of era and year of era); exact for every date an int64 of milliseconds can hold.
void civil_from_days(std::int64_t z, std::int64_t& y, unsigned& m, unsigned& d) {
    z += 719468;
    const std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const auto doe = static_cast<unsigned>(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    d = doy - (153 * mp + 2) / 5 + 1;
    m = mp < 10 ? mp + 3 : mp - 9;
    y = static_cast<std::int64_t>(yoe) + era * 400 + (m <= 2 ? 1 : 0);
}

char* put_digits(char* p, unsigned v, int width) {
    for (int i = width - 1; i >= 0; --i) {
        p[i] = static_cast<char>('0' + v % 10);
        v /= 10;
    }
    return p + width;
}

}  // namespace

void append_time(std::string& out, millis t) {
    std::int64_t secs = t / 1000;
    std::int64_t ms = t % 1000;
    if (ms < 0) {
        ms += 1000;
        --secs;
    }
    std::int64_t days = secs / 86400;
    std::int64_t rem = secs % 86400;
    if (rem < 0) {
        rem += 86400;
        --days;
    }
    std::int64_t year = 0;
    unsigned month = 0, day = 0;
    civil_from_days(days, year, month, day);
    if (year < 0 || year > 9999) {
        // Outside RFC 3339's four-digit years: still readable, never reached by real clocks.
        char buf[64];
        std::snprintf(buf, sizeof buf, "%lld-%02u-%02uT%02lld:%02lld:%02lld.%03lldZ",
                      static_cast<long long>(year), month, day, static_cast<long long>(rem / 3600),
                      static_cast<long long>(rem / 60 % 60), static_cast<long long>(rem % 60),
                      static_cast<long long>(ms));
        out += buf;
        return;
    }
    char buf[24];
    char* p = put_digits(buf, static_cast<unsigned>(year), 4);
    *p++ = '-';
    p = put_digits(p, month, 2);
    *p++ = '-';
    p = put_digits(p, day, 2);
    *p++ = 'T';
    p = put_digits(p, static_cast<unsigned>(rem / 3600), 2);
    *p++ = ':';
    p = put_digits(p, static_cast<unsigned>(rem / 60 % 60), 2);
    *p++ = ':';
    p = put_digits(p, static_cast<unsigned>(rem % 60), 2);
    *p++ = '.';
    p = put_digits(p, static_cast<unsigned>(ms), 3);
    *p++ = 'Z';
    out.append(buf, p);
}

std::string format_time(millis t) {
    std::string out;
    append_time(out, t);
    return out;
}

}  // namespace buzzer::core
