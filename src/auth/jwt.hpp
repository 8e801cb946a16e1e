// JSON Web Tokens (RFC 7519) signed with JWS compact serialization (RFC 7515): the keys a
// server trusts, and the verification of a bearer token against them.
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "core/principal.hpp"
#include "core/time.hpp"

namespace buzzer::auth {

/// The JWS algorithms accepted (RFC 7518 §3.1); `none` is not one of them.
enum class jwt_alg { hs256, hs384, hs512, rs256, rs384, rs512, es256, es384, es512 };

/// "HS256" ... "ES512", exactly as written in a JWS header; nullopt for any other name.
std::optional<jwt_alg> parse_jwt_alg(std::string_view name);

/// The name of `alg` in a JWS header ("HS256" ...).
std::string_view to_string(jwt_alg alg);

/// The keys a server verifies tokens with, each under a key id and bound to one algorithm.
/// Filled once, then only read: verify_jwt may use one set from many threads at once.
class jwt_keys {
  public:
    jwt_keys();
    ~jwt_keys();
    jwt_keys(jwt_keys&&) noexcept;
    jwt_keys& operator=(jwt_keys&&) noexcept;

    /// Adds the RS* or ES* public key in `pem` (a PUBLIC KEY or a CERTIFICATE block). Throws
    /// std::invalid_argument when it does not load or does not fit `alg` (RSA of 2048 bits or
    /// more for RS*, the curve P-256, P-384 or P-521 of ES256, ES384 or ES512), when `alg` is
    /// an HS*, or when `kid` is taken (an empty `kid` only for a key alone in the set).
    void add_pem(std::string kid, jwt_alg alg, std::string_view pem);

    /// Adds the HMAC secret of an HS* key. Throws std::invalid_argument when it is shorter
    /// than the hash's output (RFC 7518 §3.2), when `alg` is not an HS*, or when `kid` is taken.
    void add_secret(std::string kid, jwt_alg alg, std::string secret);

    /// How many keys the set holds.
    std::size_t size() const;

    /// The key for a token's `kid`, or for a token without one when the set holds one key.
    struct key;
    const key* find(std::optional<std::string_view> kid) const;

  private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

/// What a token must say beyond its signature.
struct jwt_rules {
    /// The `iss` a token must carry, compared byte for byte.
    std::string issuer;
    /// What `aud` must be, or contain when it is an array.
    std::string audience;
    /// The claim that names the tenant (a non-empty string).
    std::string tenant_claim = "tenant";
    /// Clock skew allowed on `exp`, `nbf` and `iat`, in seconds.
    long leeway_s = 30;
    /// Larger tokens are refused before anything is decoded.
    std::size_t max_size = 8192;
};

/// What a verified token grants.
struct jwt_claims {
    /// `sub`, empty when the token has none.
    std::string subject;
    /// The value of the tenant claim.
    std::string tenant;
    /// The highest of buzzer:read, buzzer:write and buzzer:admin in `scope`; none: nullopt.
    std::optional<core::role> role;
    /// `buzzer_kinds`, when the token limits kinds.
    std::optional<std::vector<std::string>> kinds;
    /// `exp`, in milliseconds since the epoch.
    core::millis expires_at = 0;
};

/// Why a token is refused.
enum class jwt_error {
    malformed,         ///< not three base64url parts, not JSON objects, a claim of a wrong type
    too_large,         ///< over jwt_rules::max_size
    algorithm,         ///< `alg` is not the one configured for the key (or `none`, or unknown)
    unknown_key,       ///< no key with the token's `kid` (or no `kid` among several keys)
    signature,         ///< the signature does not verify
    expired,           ///< `exp` is past
    not_yet_valid,     ///< `nbf` is ahead
    issued_in_future,  ///< `iat` is ahead
    issuer,            ///< `iss` missing or another
    audience,          ///< `aud` missing or without the audience
    no_tenant,         ///< the tenant claim missing, empty or not a string
};

/// A short sentence for the detail of a 401 ("the token has expired"); it names no key.
std::string_view describe(jwt_error e);

/// Verifies `token` (compact JWS) against `keys` and `rules` at time `now`. The algorithm is
/// the one configured for the key; the header's `alg` must name it. A header with `crit`, a
/// header or payload with a repeated member, and numeric dates that are not finite or beyond
/// ±10^15 s are malformed. The claims are read only once the signature has verified.
std::variant<jwt_claims, jwt_error> verify_jwt(std::string_view token, const jwt_keys& keys,
                                               const jwt_rules& rules, core::millis now);

}  // namespace buzzer::auth
