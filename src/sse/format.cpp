#include "sse/format.hpp"

namespace buzzer::sse {

std::string format_event(const store::event& e) {
    std::string out;
    out.reserve(e.data.size() + e.type.size() + 40);
    out += "id: ";
    out += std::to_string(e.seq);
    out += "\nevent: ";
    out += e.type;
    out += "\ndata: ";
    // Stored data is serialized JSON without raw line breaks; guard anyway, a break would
    // split the event.
    for (char c : e.data) out += (c == '\n' || c == '\r') ? ' ' : c;
    out += "\n\n";
    return out;
}

std::string format_retry(unsigned ms) { return "retry: " + std::to_string(ms) + "\n\n"; }

bool is_terminal_event(std::string_view type) {
    return type == "completed" || type == "failed" || type == "canceled";
}

}  // namespace buzzer::sse
