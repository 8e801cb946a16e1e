// Access control as configured: whether auth is on, the JWT issuer and keys, quotas per
// tenant, CORS. Parsed from the configuration file's `auth`, `tenants` and `cors` members.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace buzzer::auth {

/// One configured JWT verification key, as named in the file (loaded later).
struct jwt_key_source {
    std::string kid;
    std::string alg;          ///< "ES256", "HS256", ...
    std::string pem_file;     ///< RS and ES: the public key (PEM)
    std::string secret_file;  ///< HS: the secret's bytes, without a trailing newline
};

/// `auth.jwt`.
struct jwt_settings {
    std::string issuer;
    std::string audience;
    std::string tenant_claim = "tenant";
    long leeway_s = 30;
    std::vector<jwt_key_source> keys;
};

/// Limits of one tenant; none: unlimited.
struct quota {
    std::optional<std::uint64_t> max_pending;  ///< pending operations
    std::optional<double> submit_rate;         ///< submissions per second
    double submit_burst = 1;                   ///< submissions at once (with submit_rate)
};

/// `cors`.
struct cors_settings {
    std::vector<std::string> origins;  ///< "https://app.example.com", exactly as browsers send
    bool credentials = false;
    long max_age_s = 600;

    /// Whether `origin` is listed.
    bool allows(std::string_view origin) const;
};

/// Everything about access the configuration says.
struct settings {
    bool enabled = false;          ///< protected mode: credentials are needed
    bool open_on_purpose = false;  ///< `"auth": "none"` or --no-auth: open, anywhere
    std::optional<jwt_settings> jwt;
    std::string metrics_token;  ///< a bearer token that may read /metrics; empty: none
    unsigned failure_limit = 20;  ///< failed authentications per second per address; 0: none
    std::map<std::string, quota, std::less<>> tenants;
    std::optional<quota> other_tenants;  ///< the `"*"` entry
    std::optional<cors_settings> cors;

    /// The quota of `tenant`: its own entry, else `"*"`'s; null when unlimited.
    const quota* quota_for(std::string_view tenant) const;
};

/// Parses the JSON texts of the file's `auth` (empty when absent; `"none"` as the JSON
/// string), `tenants` and `cors` (empty when absent). `file` names the source in messages.
/// Throws std::invalid_argument naming the key and what it takes.
settings parse_settings(std::string_view auth, std::string_view tenants, std::string_view cors,
                        const std::string& file);

}  // namespace buzzer::auth
