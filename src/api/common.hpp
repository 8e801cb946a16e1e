// Helpers the handlers share: JSON responses, ids, waiting for an operation.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/json/value.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "api/context.hpp"
#include "api/fields.hpp"
#include "core/operation.hpp"
#include "core/principal.hpp"
#include "http/message.hpp"

namespace buzzer::api {

/// Who `req` acts for: its authenticated principal; without one (open mode), an admin of the
/// default tenant.
const core::principal& caller(const http::request& req);

/// The tenant whose operations `req` may see: its caller's.
store::tenant_id tenant_of(const http::request& req);

/// A JSON response with `Content-Type: application/json`.
http::response json_response(int status, std::string body);

/// Throws 404 unless `id` is a well-formed operation id.
void require_id(std::string_view id);

/// The status monitor URL of an operation ("/operations/ID/status", with the base URL).
std::string status_url(const context& ctx, std::string_view id);

/// Loads an operation of `tenant` through a reader connection.
boost::asio::awaitable<std::optional<core::operation>> load(context& ctx, store::tenant_id tenant,
                                                            std::string id);

/// What the status monitor answers with: an operation's state and its representation.
struct status_view {
    std::string id;
    core::status state = core::status::pending;
    core::millis run_after = 0;  ///< for Retry-After while pending
    std::string text;            ///< the representation

    /// The view of a loaded operation.
    static status_view of(const context& ctx, const core::operation& op);
};

/// Waits until the operation is terminal, `seconds` pass or the client of `req` is gone;
/// returns its latest state (from its terminal event when one arrived, else from the store).
/// None when the tenant of `req` has no such operation.
boost::asio::awaitable<std::optional<status_view>> wait_terminal(context& ctx,
                                                                 const http::request& req,
                                                                 std::string id, int seconds);

/// Waits on an existing subscription to `id` (an operation of the tenant of `req`) until its
/// terminal event, `seconds` pass or the client of `req` is gone; the view carried by that
/// event, or else from the store.
boost::asio::awaitable<std::optional<status_view>> await_terminal(
    context& ctx, const http::request& req, const std::shared_ptr<sse::subscription>& sub,
    std::string id, int seconds);

/// The status monitor's answer (200 with Retry-After, or 303 to the result).
http::response status_response(const context& ctx, const status_view& v);

/// The Retry-After value (seconds) suggested while an operation in `state` is active, given the
/// earliest start of its next attempt.
std::string retry_after_for(core::status state, core::millis run_after);

}  // namespace buzzer::api
