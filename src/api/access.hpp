// Who may do what: credentials on every route, roles, quotas, the failed-authentication limit
// per client address, and CORS for browser apps on other origins.
#pragma once

#include <algorithm>
#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

#include "auth/authenticator.hpp"
#include "auth/limits.hpp"
#include "auth/quotas.hpp"
#include "core/principal.hpp"
#include "http/message.hpp"
#include "http/router.hpp"
#include "jobs/scheduler.hpp"

namespace buzzer::api {

struct context;

/// The access state of one server, shared by every I/O thread.
struct access {
    explicit access(auth::authenticator& credentials)
        : credentials(credentials), failures(std::max(1u, credentials.current()->failure_limit)) {}

    auth::authenticator& credentials;
    auth::failure_limiter failures;  ///< failed authentications per client address
    auth::submit_rates rates;        ///< submissions per tenant
    std::atomic<std::uint64_t> quota_rejections{0};
    std::atomic<std::uint64_t> failure_rejections{0};  ///< 429s of the failure limit

    /// Logs a refused credential, at most a few lines a second; the rest are counted and
    /// summed up in the next line that is written.
    void log_refusal(const std::string& line);

  private:
    std::mutex log_mutex_;
    std::chrono::steady_clock::time_point window_{};
    unsigned in_window_ = 0;
    std::uint64_t unlogged_ = 0;
};

/// Installs the hooks that run around every request: the failure limit and CORS.
void add_access_hooks(http::router& r, context& ctx);

/// Authenticates `req` and checks that its credential has `needed`; sets `req.principal`.
/// Throws the 401 or 403 problem otherwise. In open mode it lets everything through.
boost::asio::awaitable<void> authorize(context& ctx, http::request& req, core::role needed);

/// Admits a new operation of `who`'s tenant (jobs::scheduler::admit()); throws 429 when the
/// tenant is over its submission quota (rate or pending operations).
jobs::scheduler::pending_claim admit_submission(context& ctx, const core::principal& who);

/// The session routes (session.cpp) and the key routes (keys.cpp).
void add_session_routes(http::router& r, context& ctx);
void add_key_routes(http::router& r, context& ctx);

}  // namespace buzzer::api
