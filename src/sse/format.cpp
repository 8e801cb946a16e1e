#include "sse/format.hpp"

namespace buzzer::sse {

std::optional<core::status> event_state(std::string_view type) {
    if (type == "completed") return core::status::succeeded;
    return core::parse_status(type);
}

std::string event_data(const core::event& e, std::string_view base_url) {
    std::string data = e.data;
    auto state = event_state(e.type);
    // Rows written before links were left out of the log end with the links array.
    if (state && !data.ends_with("]}")) core::append_links(data, e.operation_id, *state, base_url);
    return data;
}

std::string format_event(const core::event& e, std::string_view base_url) {
    const std::string data = event_data(e, base_url);
    std::string out;
    out.reserve(data.size() + e.type.size() + 40);
    out += "id: ";
    out += std::to_string(e.seq);
    out += "\nevent: ";
    out += e.type;
    out += "\ndata: ";
    // Stored data is serialized JSON without raw line breaks; guard anyway, a break would
    // split the event.
    for (char c : data) out += (c == '\n' || c == '\r') ? ' ' : c;
    out += "\n\n";
    return out;
}

std::string format_retry(unsigned ms) { return "retry: " + std::to_string(ms) + "\n\n"; }

bool is_terminal_event(std::string_view type) {
    return type == "completed" || type == "failed" || type == "canceled";
}

}  // namespace buzzer::sse
