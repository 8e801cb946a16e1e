// ULIDs: 48 bits of milliseconds and 80 random bits, in Crockford base32.
#pragma once

#include <string>
#include <string_view>

#include "core/time.hpp"

namespace buzzer::core {

/// A new ULID for time `t`, with 80 bits from the OS CSPRNG; each is greater than the ones
/// this process made before (within a millisecond: the previous one plus a random 64-bit step).
std::string make_ulid(millis t);

/// The smallest ULID of millisecond `t`: every id made at `t` or later sorts at or above it.
std::string ulid_floor(millis t);

/// Whether `s` is 26 Crockford base32 characters (upper case) with a valid first character.
bool is_ulid(std::string_view s);

/// The millisecond timestamp of a valid ULID.
millis ulid_time(std::string_view s);

}  // namespace buzzer::core
