#include "core/time.hpp"

#include <chrono>
#include <cstdio>

namespace buzzer::core {

millis now_ms() {
    using namespace std::chrono;
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

namespace {

char* put_digits(char* p, unsigned v, int width) {
    for (int i = width - 1; i >= 0; --i) {
        p[i] = static_cast<char>('0' + v % 10);
        v /= 10;
    }
    return p + width;
}

}  // namespace

// Digits written out rather than through snprintf and gmtime_r (which takes glibc's time-zone
// lock): this runs for every time field of every representation.
void append_time(std::string& out, millis t) {
    using namespace std::chrono;
    const sys_time<milliseconds> at{milliseconds(t)};
    const auto day = floor<days>(at);
    const year_month_day date{day};
    const hh_mm_ss<milliseconds> clock{at - day};
    const int year = static_cast<int>(date.year());
    if (year < 0 || year > 9999) {
        // Outside RFC 3339's four-digit years: still readable, never reached by real clocks.
        char buf[64];
        std::snprintf(buf, sizeof buf, "%d-%02u-%02uT%02ld:%02ld:%02lld.%03lldZ", year,
                      static_cast<unsigned>(date.month()), static_cast<unsigned>(date.day()),
                      static_cast<long>(clock.hours().count()),
                      static_cast<long>(clock.minutes().count()),
                      static_cast<long long>(clock.seconds().count()),
                      static_cast<long long>(clock.subseconds().count()));
        out += buf;
        return;
    }
    char buf[24];
    char* p = put_digits(buf, static_cast<unsigned>(year), 4);
    *p++ = '-';
    p = put_digits(p, static_cast<unsigned>(date.month()), 2);
    *p++ = '-';
    p = put_digits(p, static_cast<unsigned>(date.day()), 2);
    *p++ = 'T';
    p = put_digits(p, static_cast<unsigned>(clock.hours().count()), 2);
    *p++ = ':';
    p = put_digits(p, static_cast<unsigned>(clock.minutes().count()), 2);
    *p++ = ':';
    p = put_digits(p, static_cast<unsigned>(clock.seconds().count()), 2);
    *p++ = '.';
    p = put_digits(p, static_cast<unsigned>(clock.subseconds().count()), 3);
    *p++ = 'Z';
    out.append(buf, p);
}

std::string format_time(millis t) {
    std::string out;
    append_time(out, t);
    return out;
}

}  // namespace buzzer::core
