// The text/event-stream wire format.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "core/event.hpp"
#include "core/operation.hpp"

namespace buzzer::sse {

/// The state an event type records (`completed` is `succeeded`); none for `progress`.
std::optional<core::status> event_state(std::string_view type);

/// An event's JSON: a state event's stored representation with its links (under `base_url`)
/// added; a progress event's data as stored.
std::string event_data(const core::event& e, std::string_view base_url);

/// "id: SEQ\nevent: TYPE\ndata: DATA\n\n" (data is one line of JSON, from `event_data`).
std::string format_event(const core::event& e, std::string_view base_url);

/// "retry: MS\n\n".
std::string format_retry(unsigned ms);

/// The heartbeat comment.
inline constexpr std::string_view keepalive = ": keepalive\n\n";

/// Whether an event type ends its operation's stream.
bool is_terminal_event(std::string_view type);

}  // namespace buzzer::sse
