// Checks the credentials of requests: API keys, JWTs and session cookies, with caches so that
// a hot client costs neither a database read nor a signature check per request, and watches
// the database for keys revoked by any process.
#pragma once

#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "auth/settings.hpp"
#include "core/principal.hpp"
#include "core/time.hpp"

namespace buzzer::store {
class store;
}

namespace buzzer::auth {

/// Why a credential was refused: the `reason` label of buzzer_auth_failures_total.
enum class refusal {
    missing,    ///< no credential
    malformed,  ///< not a bearer credential, not a key, not a token
    unknown,    ///< an API key that does not exist
    revoked,    ///< a revoked API key, or a session of one
    expired,    ///< an expired key, token or session
    invalid,    ///< a token or cookie that does not verify (signature, claims, size)
    forbidden,  ///< authenticated, but the role does not allow the request (403)
};

/// Every refusal, for /metrics.
inline constexpr refusal all_refusals[] = {refusal::missing,  refusal::malformed, refusal::unknown,
                                           refusal::revoked,  refusal::expired,   refusal::invalid,
                                           refusal::forbidden};

/// The label of a refusal.
std::string_view to_string(refusal r);

/// What checking a request's credential came to.
struct verdict {
    std::shared_ptr<const core::principal> who;  ///< set when authenticated
    refusal why = refusal::missing;              ///< when not
    std::string detail;                          ///< the problem's detail when not
    bool credential_sent = false;                ///< a credential was there (invalid_token)
    std::string credential;  ///< when known, the key id or "jwt:" and the claimed `sub` (logs)
};

/// A key as `POST /keys` and `buzzer keys create` return it, the only time its text is shown.
struct created_key {
    std::string id;
    std::string text;
    std::string tenant;
    core::role role = core::role::read;
    std::string name;
    std::optional<std::vector<std::string>> kinds;
    core::millis created_at = 0;
    std::optional<core::millis> expires_at;
};

/// What a new key is to be.
struct key_request {
    std::string tenant;
    core::role role = core::role::read;
    std::string name;
    std::optional<std::vector<std::string>> kinds;
    std::optional<double> expires_in_s;
};

/// Makes a key and stores its hash; the text is in the result only.
boost::asio::awaitable<created_key> create_key(store::store& db, key_request request);

/// Credential checks for one server. Thread-safe: requests on every I/O thread call it.
class authenticator {
  public:
    /// `cookie_secret`: the database's shared secret for session cookies. Loads the JWT keys
    /// the settings name; throws std::runtime_error naming a file that does not load.
    authenticator(store::store& db, const settings& s, std::string cookie_secret);
    ~authenticator();
    authenticator(const authenticator&) = delete;
    authenticator& operator=(const authenticator&) = delete;

    /// Takes new settings (SIGHUP); throws like the constructor and then keeps the old ones.
    void reload(const settings& s);

    /// Whether credentials are needed.
    bool enabled() const;

    /// The current settings.
    std::shared_ptr<const settings> current() const;

    /// Checks a request's `Authorization` value (none when absent) and, for a safe method
    /// (GET, HEAD), its `Cookie` header's session.
    boost::asio::awaitable<verdict> check(std::optional<std::string_view> authorization,
                                          std::optional<std::string_view> cookie_header,
                                          bool safe_method);

    /// Whether `authorization` is `Bearer <metrics_token>`.
    bool is_metrics_token(std::string_view authorization) const;

    /// The value of a session cookie for `who`, valid until its credential expires, 12 h at
    /// most.
    std::string session_for(const core::principal& who) const;

    /// Forgets key `id` at once (revoked here); other processes' revocations arrive through
    /// watch().
    void revoked(const std::string& id);

    /// Reads the revocations made since the last call (all of them the first time).
    boost::asio::awaitable<void> refresh();

    /// Follows revocations in the database, every `period`, until stop().
    boost::asio::awaitable<void> watch(std::chrono::milliseconds period);

    /// Ends watch().
    void stop();

    /// Counts a refusal (for the metric).
    void count(refusal r);
    /// Refusals so far, by reason.
    std::uint64_t refusals(refusal r) const;

  private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

/// The name of the session cookie.
inline constexpr std::string_view session_cookie = "buzzer_session";

/// How long a session lasts at most.
inline constexpr core::millis session_lifetime_ms = 12LL * 3600 * 1000;

}  // namespace buzzer::auth
