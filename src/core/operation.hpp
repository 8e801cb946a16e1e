// The operation record shared by the store, the scheduler and the API, and its JSON form.
#pragma once

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/principal.hpp"
#include "core/time.hpp"

namespace buzzer::core {

/// Lifecycle state of an operation.
enum class status { pending, running, succeeded, failed, canceled };

/// `"pending"`, `"running"`, ...
std::string_view to_string(status s);

/// Parses a status name; nullopt when unknown.
std::optional<status> parse_status(std::string_view s);

/// Whether no further transition can happen.
inline bool is_terminal(status s) {
    return s == status::succeeded || s == status::failed || s == status::canceled;
}

/// One operation as stored (the result body is kept apart: it can be large).
struct operation {
    std::string id;
    std::string kind;
    status state = status::pending;
    std::string input;  ///< serialized JSON, "null" when absent
    int priority = 0;
    int max_attempts = 1;
    double timeout_s = 60;
    int attempt = 0;
    millis created_at = 0;
    std::optional<millis> started_at;
    std::optional<millis> finished_at;
    millis run_after = 0;                 ///< earliest start of the next attempt (backoff)
    std::optional<std::string> progress;  ///< serialized {"percent","message"}
    std::optional<std::string> error;     ///< serialized problem object
    bool cancel_requested = false;        ///< a cancel was accepted; its job is to stop
    std::int64_t row = 0;                 ///< the store's handle (insertion order); 0: not known
    /// Whose it is: only that tenant's requests see it. Not part of its representation.
    std::string tenant{default_tenant};
};

/// A stored result body and its media type.
struct result_body {
    std::string body;
    std::string media_type;
};

/// A pending operation as a ready queue needs it.
struct queued {
    std::string id;
    std::string kind;
    int priority = 0;
    millis run_after = 0;
    std::int64_t order = 0;  ///< insertion order (the store's row): ties run oldest first
    std::string tenant{default_tenant};  ///< the operation's (for quotas per tenant)
};

/// The queue entry of a pending operation that has its row.
inline queued queue_entry(const operation& op) {
    return {op.id, op.kind, op.priority, op.run_after, op.row, op.tenant};
}

/// A JSON number: an integer when `v` is whole (so 60 prints as 60, not 6E1).
boost::json::value json_number(double v);

/// `v` as a JSON number as people write it: 60, 0.5, 1e+300 (the shortest text that reads
/// back as `v`); null when it is not finite, which JSON cannot express.
std::string number_text(double v);

/// Serializes `v` compactly, with numbers as number_text writes them (Boost.JSON would write
/// 0.5 as 5E-1) and strings escaped as append_json_string does.
std::string to_json(const boost::json::value& v);

/// The same with object keys sorted at every level: equal JSON values give equal text (1, 1.0
/// and 1e0 too).
std::string canonical_json(const boost::json::value& v);

/// Whether two JSON values are equal, numbers by value (1 == 1.0).
bool same_json(const boost::json::value& a, const boost::json::value& b);

/// Builds a problem object (RFC 9457 members) for an operation's `error`.
boost::json::object make_problem(std::string_view type, std::string_view title, int status,
                                 std::string_view detail, std::string_view instance);

/// A serialized problem for an operation's `error`, with `instance` = "/operations/ID".
std::string operation_problem(std::string_view type, std::string_view title, int status,
                              std::string_view detail, std::string_view id);

/// The `error` of an operation canceled on request.
std::string canceled_problem(std::string_view id);

/// The representation without its links, as JSON text: what the event log stores, so that
/// stored events follow the public URL the server has when they are sent.
std::string state_text(const operation& op);

/// Adds the links of operation `id` in state `s` to a `state_text` (before its closing brace).
void append_links(std::string& text, std::string_view id, status s, std::string_view base_url);

/// The public representation as JSON text: fields and links; hrefs are prefixed with
/// `base_url`.
std::string represent_text(const operation& op, std::string_view base_url);

/// Appends `text` as a JSON string literal (quotes, escapes; UTF-8 passes through).
void append_json_string(std::string& out, std::string_view text);

}  // namespace buzzer::core
