// The text/event-stream wire format.
#pragma once

#include <string>
#include <string_view>

#include "store/store.hpp"

namespace buzzer::sse {

/// "id: SEQ\nevent: TYPE\ndata: DATA\n\n" (data is one line of JSON).
std::string format_event(const store::event& e);

/// "retry: MS\n\n".
std::string format_retry(unsigned ms);

/// The heartbeat comment.
inline constexpr std::string_view keepalive = ": keepalive\n\n";

/// Whether an event type ends its operation's stream.
bool is_terminal_event(std::string_view type);

}  // namespace buzzer::sse
