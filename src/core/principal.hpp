// Who a request acts for: the tenant whose operations it may see, and what it may do there.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/time.hpp"

namespace buzzer::core {

/// The tenant of every operation while the server runs without auth.
inline constexpr std::string_view default_tenant = "default";

/// What a credential allows, each role including the ones before it.
enum class role { read = 1, write = 2, admin = 3 };

/// "read", "write" or "admin".
constexpr std::string_view to_string(role r) {
    switch (r) {
        case role::read:
            return "read";
        case role::write:
            return "write";
        case role::admin:
            break;
    }
    return "admin";
}

/// Parses a role name; nullopt when unknown.
constexpr std::optional<role> parse_role(std::string_view s) {
    if (s == "read") return role::read;
    if (s == "write") return role::write;
    if (s == "admin") return role::admin;
    return std::nullopt;
}

/// The authenticated party of a request.
struct principal {
    std::string tenant{default_tenant};
    role level = role::admin;
    /// The kinds it may submit; none: every kind.
    std::optional<std::vector<std::string>> kinds;
    /// What the logs name it by: an API key's id or "jwt:" and a token's `sub`; empty in open
    /// mode. Never a secret.
    std::string credential;
    /// When the credential stops being valid (ms since the epoch); 0: never.
    millis expires_at = 0;

    /// Whether it may act with `needed`.
    bool allows(role needed) const { return static_cast<int>(level) >= static_cast<int>(needed); }
    /// Whether it may submit operations of `kind`.
    bool may_submit(std::string_view kind) const {
        if (!kinds) return true;
        for (const auto& k : *kinds)
            if (k == kind) return true;
        return false;
    }
};

}  // namespace buzzer::core
