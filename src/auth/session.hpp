// The browser's session cookie: what a bearer credential granted, sealed with the server's
// secret, and the Cookie header it comes back in.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/principal.hpp"
#include "core/time.hpp"

namespace buzzer::auth {

/// What a session cookie carries. Never a secret of the credential.
struct session {
    /// The tenant of the credential.
    std::string tenant;
    /// Its role.
    core::role role = core::role::read;
    /// The kinds it may submit; none: every kind.
    std::optional<std::vector<std::string>> kinds;
    /// What it is named by: an API key's id or "jwt:" and the token's `sub`.
    std::string credential;
    /// When the cookie stops being valid (ms since the epoch).
    core::millis expires_at = 0;
};

/// The longest cookie value open_session reads.
inline constexpr std::size_t max_session_size = 4096;

/// The shortest secret that seals sessions.
inline constexpr std::size_t min_session_secret = 32;

/// The cookie value for `s`: base64url(compact JSON) "." base64url(HMAC-SHA256(secret, the
/// first part)). Throws std::invalid_argument when `secret` is shorter than
/// min_session_secret, or when the value would be over max_session_size.
std::string seal_session(const session& s, std::string_view secret);

/// The session that `value` seals; nullopt when it is malformed, larger than
/// max_session_size, not sealed with `secret` (compared in constant time), or expired at `now`.
std::optional<session> open_session(std::string_view value, std::string_view secret,
                                    core::millis now);

/// The value of the first cookie named `name` in a Cookie header (RFC 6265 §4.2: `a=b; c=d`,
/// values possibly in double quotes, which are removed). nullopt when there is none, or when
/// its value holds characters a cookie value cannot (white space, `"`, `,`, `;`, `\`,
/// control or non-ASCII bytes). Other malformed pairs are skipped.
std::optional<std::string_view> find_cookie(std::string_view cookie_header, std::string_view name);

}  // namespace buzzer::auth
